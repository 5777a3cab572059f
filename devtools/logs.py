"""Logging for the local stack's processes (`make dev`): one readable line per record, extras included.

In AWS the app logs JSON through Powertools (every `extra` is a field). Locally the same records go to the
terminal as `time process LEVEL logger: message key=value ...`, so a job's id, key, tier and durations stay on
its line. Libraries that narrate their own work (botocore finding credentials, werkzeug's access log of the
moto server, urllib3) are quieted to warnings.
"""

from __future__ import annotations

import logging
from typing import Any

QUIET = ("botocore", "boto3", "urllib3", "werkzeug", "moto", "s3transfer", "websockets")
# Attributes every LogRecord has: anything else on a record came from `extra` (or Powertools' keys).
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class ExtrasFormatter(logging.Formatter):
    """The message, then each extra field of the record as `key=value` (sorted; None values left out)."""

    def __init__(self, process: str) -> None:
        super().__init__(f"%(asctime)s {process} %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = {k: v for k, v in vars(record).items() if k not in _STANDARD and v is not None}
        if extras:
            line += " " + " ".join(f"{k}={_value(v)}" for k, v in sorted(extras.items()))
        # a traceback goes after the fields, as the formatter put it
        return line


def _value(value: Any) -> str:
    text = str(value)
    return repr(text) if not text or any(c.isspace() or c == "=" for c in text) else text


def configure(process: str, level: int = logging.INFO) -> None:
    """Root logging for one local process (`stack`, `worker`)."""
    handler = logging.StreamHandler()
    handler.setFormatter(ExtrasFormatter(process))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    quiet()


def quiet() -> None:
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)


def take_back_from_powertools() -> int:
    """Undo what building app.py's Logger does to loggers (Powertools' `copy_config_to_registered_loggers`
    gives each logger its JSON handler, stops propagation and sets INFO, botocore's too): their records go to
    the root handler again. Returns how many loggers it changed."""
    changed = 0
    for logger in list(logging.root.manager.loggerDict.values()):
        if not isinstance(logger, logging.Logger):
            continue
        if any(type(h.formatter).__name__ == "LambdaPowertoolsFormatter" for h in logger.handlers):
            logger.handlers = []
            logger.propagate = True
            logger.setLevel(logging.NOTSET)
            changed += 1
    quiet()
    return changed
