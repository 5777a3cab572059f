"""The `job.finished` event: one per terminal job, the same body on every channel (webhook, WebSocket, inbox).

Event ids come from a per-key counter and are zero-padded, so they increase per key and sort as strings: a
client orders and de-duplicates with them, and `ack through=<id>` means "everything up to here".
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from pydantic import BaseModel

from chalicelib.domain.jobs import Job
from chalicelib.domain.views import iso as _iso

EVENT_TYPE = "job.finished"
SUMMARY_OUTPUT_BYTES = 4096  # stdout and stderr in an event are cut to this (the job keeps the full output)
_EVENT_ID = re.compile(r"^evt_\d{12}$")

# A terminal job stays marked "unpublished" until its job.finished event is produced; the reaper produces the
# events of jobs still marked this long after they ended (the fan-out right after the write takes well under 1 s).
PUBLISH_GRACE_S = 60


def event_id(number: int) -> str:
    """The id of a key's `number`-th event: "evt_000000000042" (fixed width, so string order = number order)."""
    return f"evt_{number:012d}"


def is_event_id(text: str) -> bool:
    return bool(_EVENT_ID.match(text))


def webhook_message_id(job_id: str) -> str:
    """The Standard Webhooks `webhook-id`: unique across keys (one event per job) and the same on every attempt."""
    return f"msg_{job_id}"


def truncate_utf8(text: str, limit: int = SUMMARY_OUTPUT_BYTES) -> tuple[str, bool]:
    """`text` cut to at most `limit` UTF-8 bytes on a character boundary, and whether anything was cut."""
    raw = text.encode("utf-8", "replace")
    if len(raw) <= limit:
        return text, False
    return raw[:limit].decode("utf-8", "ignore"), True


class Event(BaseModel):
    """A `job.finished` event as every channel delivers it."""

    id: str
    type: str = EVENT_TYPE
    created_at: str | None
    job: dict[str, Any]

    def body(self) -> str:
        """The exact JSON text that is delivered (and signed): compact, key order fixed."""
        return json.dumps(self.model_dump(mode="json"), separators=(",", ":"), ensure_ascii=False)


class EventsView(BaseModel):
    """`GET /v1/events`: the device's waiting events, oldest first (at most 50), and how many older ones were
    dropped from its full inbox since its last read."""

    device: str
    events: list[Event]
    dropped: int = 0


def _result_summary(job: Job) -> dict[str, Any] | None:
    result = job.result
    if result is None:
        return None
    summary: dict[str, Any] = {
        "exit_code": result.exit_code,
        "signal": result.signal,
        "reason": result.reason.value if result.reason is not None else None,
        "wall_ms": result.wall_ms,
        "cpu_ms": result.cpu_ms,
        "max_rss_kb": result.max_rss_kb,
    }
    for name in ("stdout", "stderr"):
        if job.spec.output_encoding == "base64":  # the exact bytes the program wrote, as on the job
            raw = result.output_bytes(name)
            text, cut = base64.b64encode(raw[:SUMMARY_OUTPUT_BYTES]).decode(), len(raw) > SUMMARY_OUTPUT_BYTES
        else:
            text, cut = truncate_utf8(getattr(result, name))
        summary[name] = text
        summary[f"{name}_truncated"] = cut or bool(getattr(result, f"{name}_truncated"))
    if job.spec.output_encoding == "base64":
        summary["encoding"] = "base64"
    tests = result.tests
    summary["tests"] = None if tests is None else {"total": tests.total, "accepted": tests.accepted}
    return summary


def build_event(job: Job, event_id_: str) -> Event:
    """The event of a terminal job. Deterministic (timestamps come from the job), so a re-published event is
    the same event."""
    return Event(
        id=event_id_,
        created_at=_iso(job.finished_at),
        job={
            "id": job.id,
            "status": job.status.value,
            "tier": job.tier,
            "runtime": job.spec.runtime,
            "tool": job.spec.tool,
            "device": job.spec.device,
            "attempts": job.attempts,
            "created_at": _iso(job.created_at),
            "finished_at": _iso(job.finished_at),
            "error": job.error,
            "result": _result_summary(job),
        },
    )
