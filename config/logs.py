"""Structured logs: one JSON object per line, so ``grep <event id>`` follows a webhook.

:func:`configure_logging` is called once by each entry point (``webhooks.wsgi`` for
gunicorn, the Celery worker's ``setup_logging`` signal in :mod:`worker.tasks`). Log
calls pass their fields as ``extra={"sb": {...}}``; the formatter merges them into the
line beside ``ts``, ``level``, ``logger`` and ``msg``. Values are never whole payloads
(callers pass ids, names, counts and durations) and every string goes through the
:class:`~worker.redact.Redactor` built from the config's secrets, as a last guard.

``SWITCHBOARD_LOG_LEVEL`` (INFO) sets the level of the ``switchboard`` loggers;
``SWITCHBOARD_LOG_FORMAT=text`` gives plain lines for a terminal.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import time
from collections.abc import Iterable
from typing import Any

from config.environment import Reader
from config.settings import LOG_LEVELS
from worker.redact import Redactor

FIELDS_ATTR = "sb"


@functools.lru_cache(maxsize=4)
def _utc_second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


class JsonFormatter(logging.Formatter):
    """``{"ts": ..., "level": ..., "logger": ..., "msg": ..., <fields>}`` on one line."""

    def __init__(self, redactor: Redactor | None = None):
        super().__init__()
        self.redactor = redactor or Redactor(())

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": round(record.created, 6),
            "time": _utc_second(int(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, FIELDS_ATTR, None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                line.setdefault(key, value)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        # redacted once, in the finished text (secrets as json.dumps escapes them): cheaper
        # than walking every value, and it also covers keys and default=str output
        return self.redactor.json_text(json.dumps(line, separators=(",", ":"), default=str))


class TextFormatter(logging.Formatter):
    """Plain ``time level logger message`` lines for a terminal, redacted as JSON ones are."""

    def __init__(self, redactor: Redactor | None = None):
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")
        self.redactor = redactor or Redactor(())

    def format(self, record: logging.LogRecord) -> str:
        return self.redactor.text(super().format(record)) or ""


def event(logger: logging.Logger, msg: str, at: int = logging.INFO, **fields: Any) -> None:
    """Log ``msg`` at level ``at`` (INFO) with structured ``fields`` (skipped cheaply when
    disabled)."""
    if logger.isEnabledFor(at):
        logger.log(at, msg, extra={FIELDS_ATTR: fields})


def configure_logging(
    secrets: Iterable[str] = (), level: str | None = None, stream: Any = None
) -> logging.Handler:
    """Send every log record to ``stream`` (stderr) as JSON; returns the handler."""
    handler = logging.StreamHandler(stream or sys.stderr)
    text = Reader().choice("SWITCHBOARD_LOG_FORMAT", "json", ("json", "text")) == "text"
    handler.setFormatter((TextFormatter if text else JsonFormatter)(Redactor(secrets)))
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_switchboard", False)]:
        root.removeHandler(old)
    handler._switchboard = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    # gunicorn's own error log (its "Invalid request ... " lines quote what the sender
    # sent) keeps its handlers and does not propagate: give them the same redaction
    for own in logging.getLogger("gunicorn.error").handlers:
        own.setFormatter(handler.formatter)
    if root.level == logging.NOTSET or root.level > logging.WARNING:
        root.setLevel(logging.WARNING)
    # a bad value is reported by Settings.from_env at start-up; here it falls back to INFO
    level = (level or Reader().choice("SWITCHBOARD_LOG_LEVEL", "INFO", LOG_LEVELS)).upper()
    logging.getLogger("switchboard").setLevel(level)
    logging.captureWarnings(True)  # Python warnings (Celery's as root, ...) as JSON lines too
    return handler
