"""Request bodies as clients send them, validated by pydantic (field paths go back in 422s)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from chalicelib.domain.errors import ValidationFailed
from chalicelib.domain.inbox import normalize_device
from chalicelib.domain.ssrf import TargetRefused, parse_target

MAX_TESTS = 20
MAX_FILES = 20
MAX_ARGS = 64


def _device(raw: str) -> str:
    try:
        return normalize_device(raw)
    except ValidationFailed as exc:
        raise ValueError(exc.message) from exc


class LimitsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    wall_time_s: float | None = Field(default=None, gt=0)
    cpu_time_s: float | None = Field(default=None, gt=0)
    memory_mb: int | None = Field(default=None, gt=0)
    output_kb: int | None = Field(default=None, gt=0, le=1024)
    processes: int | None = Field(default=None, gt=0, le=256)


class FileIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, max_length=255, pattern=r"^[\w./+-]+$")
    content: str

    @field_validator("path")
    @classmethod
    def _relative(cls, path: str) -> str:
        # The sandbox writes the file inside the job's fresh work dir: no absolute path, no way out of it.
        if path.startswith("/") or ".." in path.split("/"):
            raise ValueError("must be a relative path without '..'")
        return path


class TestIn(BaseModel):
    __test__ = False
    model_config = ConfigDict(extra="forbid")

    stdin: str = ""
    expected_stdout: str


class SubmitRequest(BaseModel):
    """`POST /v1/jobs`: a runtime with source (or files), or a registered tool."""

    model_config = ConfigDict(extra="forbid")

    runtime: str | None = Field(default=None, min_length=1, max_length=32)
    tool: str | None = Field(default=None, min_length=1, max_length=64)
    source: str | None = None
    files: list[FileIn] | None = Field(default=None, max_length=MAX_FILES)
    stdin: str = ""
    args: list[str] = Field(default_factory=list, max_length=MAX_ARGS)
    limits: LimitsIn = Field(default_factory=LimitsIn)
    tests: list[TestIn] = Field(default_factory=list, max_length=MAX_TESTS)
    callback_url: str | None = Field(default=None, pattern=r"^(?i:https?)://", max_length=2048)
    sandbox: Literal["auto", "local", "lambda", "fargate"] = "auto"
    output_encoding: Literal["utf-8", "base64"] = "utf-8"
    device: str | None = Field(default=None, max_length=80)

    @field_validator("device")
    @classmethod
    def _device_name(cls, device: str | None) -> str | None:
        # Trimmed and lower-cased; the event goes to this device's WebSocket or inbox (DESIGN.md section 8).
        return None if device is None else _device(device)

    @field_validator("callback_url")
    @classmethod
    def _callback_form(cls, url: str | None) -> str | None:
        # Only the URL's form here; services/webhooks.py resolves its host and checks every address (SSRF).
        if url is not None:
            try:
                parse_target(url, allow_loopback_http=True)
            except TargetRefused as exc:
                raise ValueError(str(exc)) from exc
        return url

    @model_validator(mode="after")
    def _one_target(self) -> SubmitRequest:
        if (self.runtime is None) == (self.tool is None):
            raise ValueError("give exactly one of 'runtime' or 'tool'")
        if self.runtime is not None:
            if self.source is None and not self.files:
                raise ValueError("a runtime job needs 'source' or 'files'")
            if self.source is not None and self.files:
                raise ValueError("give 'source' or 'files', not both")
            if self.source is not None and not self.source.strip():
                raise ValueError("'source' is empty")
        elif self.source is not None or self.files:
            raise ValueError("a tool job takes 'args' and 'stdin', not 'source' or 'files'")
        return self


class BatchRequest(BaseModel):
    """`POST /v1/jobs/batch`: up to 20 jobs, each accepted or rejected on its own."""

    model_config = ConfigDict(extra="forbid")

    jobs: list[dict[str, object]] = Field(min_length=1, max_length=20)


class AckRequest(BaseModel):
    """`POST /v1/events/ack`: remove the device's events up to and including `through`."""

    device: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description="the device (case-insensitive)")
    through: str = Field(pattern=r"^evt_\d{12}$", description="the last event id handled")


class WebhookUrlRequest(BaseModel):
    """`PUT /v1/webhook`: the key's default webhook URL, or null for none."""

    url: str | None = Field(max_length=2048, description="https://... (checked against private addresses)")
