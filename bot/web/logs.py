"""Logging for the service: one JSON line per event, with one-time link tokens redacted everywhere.

A link token in a log would let anyone who reads the log release the secret, so
the redaction runs on every record that reaches the handler (uvicorn's access
log included, which logs the request path) and on every field of the formatted
line (tracebacks included).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

LINK_PATH = re.compile(r"/links/[^\s\"'?#/\\<>&]+")
REDACTED = "/links/[redacted]"


def redact(text: str) -> str:
    return LINK_PATH.sub(REDACTED, text)


class RedactLinks(logging.Filter):
    """Rewrites a record's message so no ``/links/<token>`` path survives; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class JsonLines(logging.Formatter):
    """``{"ts", "level", "logger", "msg"}`` (plus ``exc``) on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str = "INFO", stream: object = None) -> logging.Handler:
    """Send every log record (uvicorn's, Bolt's, ours) through one redacting JSON handler on the root logger."""
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    handler.setFormatter(JsonLines())
    handler.addFilter(RedactLinks())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    return handler
