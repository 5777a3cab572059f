"""`make verify-cloud URL=... KEY=...`: the attack suite and a few normal jobs against a deployed stack.

Every attack of devtools/attacks.py and every normal job is submitted through the public API with
`"sandbox"` set to each sandbox the stack offers (`GET /v1/runtimes`), and a table says, per attack and
sandbox, whether it was contained, escaped, refused (the sandbox would not run user code and said why) or
inconclusive (the platform failed). It exits non-zero on any escape, any normal job with the wrong verdict, or
anything inconclusive; a sandbox that refuses (every job says why) is safe, not a failure: `auto` jobs then run
in another sandbox. This is what only AWS can show: Lambda's own seccomp policy, Firecracker, the VPC with
no route out, the endpoint policies, the roles. Use a pro or enterprise key (the attacks ask for up to 30 s
and 1 GB; a free key's quota also makes the run slow). Locally it runs against `make dev`
(tests/e2e/test_verify_cloud.py).

    CODERUNNER_API_KEY=cr_... python -m devtools.verify_cloud --url <EndpointURL> [--sandbox lambda ...]
"""

from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from devtools.attacks import ATTACKS, NORMAL_JOBS, Attack, Outcome, Verdict, verdict

REFUSAL = "refuses to run user code"


def outcome_of(job: dict[str, Any]) -> Outcome:
    """A finished job (as the API returns it) as an attack outcome."""
    if job["status"] == "error":
        detail = str(job.get("error") or "")
        return Outcome("refused" if REFUSAL in detail else "error", detail=detail)
    return Outcome("ran", dict(job.get("result") or {}))


class Verifier:
    """Submits through the Python client (it honours 429/503 Retry-After) and waits for each job."""

    def __init__(self, url: str, key: str, timeout_s: float = 600) -> None:
        from coderunner_client import Client

        self.client = Client(url, key, timeout=60)
        self.timeout_s = timeout_s

    def sandboxes(self) -> dict[str, dict[str, Any]]:
        """What `GET /v1/runtimes` says of each sandbox (its layers, whether it runs user code)."""
        return dict(self.client.runtimes().raw.get("sandboxes") or {})

    def job(self, sandbox: str, program: Attack | Any, stdin: str) -> dict[str, Any]:
        submitted = self.client.submit(
            program.source,
            runtime=program.runtime,
            stdin=stdin,
            limits=_limits(program),
            sandbox=sandbox,
        )
        return dict(self.client.wait(submitted.id, timeout=self.timeout_s).raw)

    def attack(self, sandbox: str, attack: Attack) -> tuple[Verdict, str]:
        first = outcome_of(self.job(sandbox, attack, attack.stdin))
        second = None
        if attack.then is not None:
            second = outcome_of(self.job(sandbox, attack.then, attack.then.stdin))
        return verdict(attack, first, second)

    def normal(self, sandbox: str, index: int) -> tuple[str, str]:
        """("ok" | "WRONG" | "refused", detail): a sandbox that refuses to run user code refuses these too."""
        job = NORMAL_JOBS[index]
        finished = self.job(sandbox, job, job.stdin)
        outcome = outcome_of(finished)
        if outcome.status == "refused":
            return "refused", outcome.detail
        problem = job.problem(finished)
        return ("ok", "") if problem is None else ("WRONG", problem)


def _limits(program: Any) -> dict[str, float]:
    limits = program.all_limits if isinstance(program, Attack) else program.limits
    return {name: float(value) for name, value in limits.items()}


def applicable(attack: Attack, layers: dict[str, Any]) -> bool:
    """An attack bounded only by one layer runs where the sandbox reports it (else it is not applicable)."""
    return not attack.needs or bool(layers.get(attack.needs))


def run(verifier: Verifier, sandboxes: list[str], parallel: int) -> tuple[dict[tuple[str, str], tuple[str, str]], bool]:
    """Every (row, sandbox) -> (verdict, detail), and whether all is well."""
    offered = verifier.sandboxes()
    cells: dict[tuple[str, str], tuple[str, str]] = {}
    work: dict[tuple[str, str], Any] = {}
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        for sandbox in sandboxes:
            layers = (offered.get(sandbox) or {}).get("layers") or {}
            for attack in ATTACKS:
                if applicable(attack, layers):
                    work[attack.name, sandbox] = pool.submit(verifier.attack, sandbox, attack)
                else:
                    cells[attack.name, sandbox] = ("n/a", f"only bounded by {attack.needs}, not a layer here")
            for index, job in enumerate(NORMAL_JOBS):
                work[f"job:{job.name}", sandbox] = pool.submit(verifier.normal, sandbox, index)
        for cell, future in work.items():
            try:
                found = future.result()
            except Exception as exc:  # noqa: BLE001 - a failed call is shown in its cell, the rest goes on
                cells[cell] = ("inconclusive", f"{type(exc).__name__}: {exc}")
                continue
            cells[cell] = found
    bad = {"escaped", "inconclusive", "WRONG"}
    return cells, not any(value in bad for value, _ in cells.values())


def table(cells: dict[tuple[str, str], tuple[str, str]], sandboxes: list[str]) -> str:
    rows = [a.name for a in ATTACKS] + [f"job:{j.name}" for j in NORMAL_JOBS]
    width = max(len(row) for row in rows) + 2
    lines = ["".ljust(width) + "".join(s.ljust(14) for s in sandboxes)]
    for row in rows:
        marks = [cells.get((row, sandbox), ("-", ""))[0] for sandbox in sandboxes]
        lines.append(row.ljust(width) + "".join(("ESCAPED" if m == "escaped" else m).ljust(14) for m in marks))
    details = [f"  {row} / {s}: {why}" for (row, s), (value, why) in sorted(cells.items()) if why and value != "n/a"]
    if details:
        lines += ["", "details:", *details]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", required=True, help="the API's base URL (the stack's EndpointURL)")
    parser.add_argument("--key", default=os.environ.get("CODERUNNER_API_KEY"), help="an API key (pro or enterprise; "
                        "default: $CODERUNNER_API_KEY, which keeps it out of the process list)")  # fmt: skip
    parser.add_argument("--sandbox", action="append", help="a sandbox to verify (default: every one offered)")
    parser.add_argument("--parallel", type=int, default=4, help="jobs in flight at once")
    args = parser.parse_args(argv)
    if not args.key:
        parser.error("an API key is needed: --key or CODERUNNER_API_KEY")
    verifier = Verifier(args.url, args.key)
    sandboxes = args.sandbox or sorted(verifier.sandboxes())
    if not sandboxes:
        print("the stack offers no sandbox (GET /v1/runtimes)", file=sys.stderr)
        return 2
    cells, ok = run(verifier, sandboxes, args.parallel)
    print(table(cells, sandboxes))
    escaped = sum(1 for value, _ in cells.values() if value == "escaped")
    print(f"\n{'contained' if ok else 'NOT VERIFIED'}: {escaped} escaped of {len(cells)} runs", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
