"""What each tier needs deployed, by name: a FIFO queue, its dead-letter queue, and the worker and dead-letter
functions app.py declares for it. Pure names, shared by the app, the local stack (devtools/) and the template
(infra/), so a tier added to `chalicelib.deployment.TIER_NAMES` gets all four or is refused with a clear message."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from chalicelib.deployment import APP_NAME

# Lowercase letters and digits: a tier's name becomes part of queue names, function names ("worker_<tier>")
# and CloudFormation logical ids ("<Tier>Queue"), which accept nothing else in common.
TIER_NAME = re.compile(r"[a-z][a-z0-9]{0,19}")


@dataclass(frozen=True)
class TierResources:
    """The names of everything one tier needs."""

    tier: str

    @property
    def worker_function(self) -> str:
        """app.py's `@app.on_sqs_message(name=...)` of the function that runs the tier's jobs."""
        return f"worker_{self.tier}"

    @property
    def dead_letter_function(self) -> str:
        """app.py's name of the function that consumes the tier's DLQ."""
        return f"dlq_{self.tier}"

    def queue(self, stage: str, dead_letter: bool = False) -> str:
        """Physical name of the tier's FIFO queue (or its DLQ) in `stage`."""
        return f"{APP_NAME}-{stage}-{self.tier}{'-dlq' if dead_letter else ''}.fifo"


def tier_resources(tier: str) -> TierResources:
    """What `tier` needs; ValueError for a name that cannot become a queue, function and logical id."""
    if not TIER_NAME.fullmatch(tier):
        raise ValueError(f"tier name {tier!r}: use 1-20 lowercase letters and digits, starting with a letter")
    return TierResources(tier)


def missing_functions(tiers: Iterable[str], module: object) -> list[str]:
    """One message per tier whose worker or dead-letter function `module` (app.py) does not declare."""
    out = []
    for tier in tiers:
        needs = tier_resources(tier)
        for function, queue in (
            (needs.worker_function, needs.queue("<stage>")),
            (needs.dead_letter_function, needs.queue("<stage>", dead_letter=True)),
        ):
            if not callable(getattr(module, function, None)):
                out.append(
                    f"tier {tier!r} (chalicelib/deployment.py TIER_NAMES) has no function {function!r}: app.py must "
                    f"declare it with @app.on_sqs_message(queue={queue!r}, name={function!r})"
                )
    return out
