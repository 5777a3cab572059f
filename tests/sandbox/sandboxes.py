"""The three sandboxes as the attack suite drives them: the local isolation, and the Lambda and Fargate
sandboxes through their real adapters on the emulators (devtools/lambda_emulator.py, fargate_emulator.py).

Each runner turns an `ExecutionRequest` into an `Outcome` (devtools/attacks.py): ran, refused (a typed
refusal, with its reason), or a platform error.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from chalicelib.domain.errors import PlatformFault
from chalicelib.sandbox.local import Isolation
from chalicelib.sandbox.models import (
    ExecutionRequest,
    ExecutionResult,
    SandboxLimits,
    SandboxRefused,
    SourceFile,
)
from chalicelib.sandbox.runner import execute
from chalicelib.sandbox.runtimes import UnknownRuntime
from devtools.attacks import Attack, Outcome, Verdict, verdict

ENTRY = {"python3": "main.py", "node": "main.js", "bash": "main.sh"}


class Runner(Protocol):
    name: str

    def run(self, request: ExecutionRequest) -> Outcome: ...


def request_for(program: Attack, marker: str = "") -> ExecutionRequest:
    return ExecutionRequest(
        job_id=f"{program.name[:20]}-{uuid.uuid4().hex[:12]}",  # ECS keeps 36 characters of startedBy
        runtime=program.runtime,
        files=[SourceFile(path=ENTRY[program.runtime], content=program.source)],
        stdin=marker if program.marker_stdin else program.stdin,
        limits=SandboxLimits.model_validate(program.all_limits),
    )


def _outcome(call: Callable[[], ExecutionResult | None]) -> Outcome:
    try:
        result = call()
    except SandboxRefused as exc:
        return Outcome("refused", detail=exc.reason)
    except (PlatformFault, UnknownRuntime, TimeoutError) as exc:
        return Outcome("error", detail=f"{type(exc).__name__}: {exc}")
    if result is None:
        return Outcome("error", detail="the sandbox left no result")
    return Outcome("ran", result.model_dump(mode="json"))


@dataclass
class LocalRunner:
    isolation: Isolation
    name: str = "local"

    def run(self, request: ExecutionRequest) -> Outcome:
        return _outcome(lambda: execute(request, isolation=self.isolation))


@dataclass
class SyncRunner:
    """A synchronous sandbox port (the Lambda sandbox on the emulator)."""

    sandbox: Any
    name: str = "lambda"

    def run(self, request: ExecutionRequest) -> Outcome:
        return _outcome(lambda: self.sandbox.run(request))


@dataclass
class FargateRunner:
    """Launch through the Fargate adapter, wait for the emulator's task-stopped event, fetch the result."""

    sandbox: Any
    events: TaskEvents
    name: str = "fargate"

    def run(self, request: ExecutionRequest) -> Outcome:
        def run_task() -> ExecutionResult | None:
            arn = self.sandbox.launch(request)
            event = self.events.wait(arn, timeout_s=request.limits.wall_time_s + 120)
            stopped = self.sandbox.stopped(event)
            assert stopped is not None and stopped.job_id == request.job_id
            return self.sandbox.fetch_result(request.job_id)  # type: ignore[no-any-return]

        return _outcome(run_task)


@dataclass
class TaskEvents:
    """The task-state events the Fargate emulator delivers, by task ARN."""

    by_arn: dict[str, dict[str, Any]] = field(default_factory=dict)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def deliver(self, event: dict[str, Any]) -> None:
        with self.changed:
            self.by_arn[event["detail"]["taskArn"]] = event
            self.changed.notify_all()

    def wait(self, arn: str, timeout_s: float) -> dict[str, Any]:
        with self.changed:
            if not self.changed.wait_for(lambda: arn in self.by_arn, timeout=timeout_s):
                raise TimeoutError(f"task {arn} did not stop within {timeout_s} s")
            return self.by_arn[arn]


@dataclass
class Report:
    """Every attack's outcomes and verdict under one runner."""

    runner: str
    outcomes: dict[str, list[Outcome]] = field(default_factory=dict)
    verdicts: dict[str, tuple[Verdict, str]] = field(default_factory=dict)

    def outputs(self) -> Iterable[str]:
        for outcomes in self.outcomes.values():
            for outcome in outcomes:
                yield outcome.stdout + outcome.stderr + outcome.detail


def run_attack(runner: Runner, attack: Attack, marker: str = "", then_runner: Runner | None = None) -> list[Outcome]:
    """The attack, then its follow-up (on `then_runner`, default the same runner) right after."""
    outcomes = [runner.run(request_for(attack, marker))]
    if attack.then is not None:
        outcomes.append((then_runner or runner).run(request_for(attack.then, marker)))
    return outcomes


def run_suite(
    runner: Runner, attacks: Iterable[Attack], marker: str, parallel: int, sequential: Runner | None = None
) -> Report:
    """Run `attacks` `parallel` at a time; those with a follow-up run one after another on `sequential`
    (a single warm environment), so the follow-up lands where the attack ran."""
    report = Report(runner.name)
    attacks = list(attacks)
    singles = [a for a in attacks if a.then is None or sequential is None]
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        futures = {a.name: pool.submit(run_attack, runner, a, marker) for a in singles}
        for a in attacks:
            if a.then is not None and sequential is not None:
                report.outcomes[a.name] = run_attack(sequential, a, marker)
        for name, future in futures.items():
            report.outcomes[name] = future.result()
    by_name = {a.name: a for a in attacks}
    for name, outcomes in report.outcomes.items():
        report.verdicts[name] = verdict(by_name[name], outcomes[0], outcomes[1] if len(outcomes) > 1 else None)
    return report
