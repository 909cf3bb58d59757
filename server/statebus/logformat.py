"""`--log-format json`: one JSON object per line, for log collectors.

Each record becomes `{"ts", "level", "logger", "message"}` (plus `"exception"` with a
traceback). The message is the same text the plain format shows, after the same
filters (no query strings in uvicorn's lines; no Stripe request lines below WARNING):
statebus never puts a token, key or signature in a log message, in either format.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from statebus.messages import encoder

FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return encoder.encode(body).decode()


def line(logger: str, message: str, level: str = "info") -> str:
    """One JSON log line written directly (for what `serve` prints rather than logs)."""
    record = logging.LogRecord(logger, getattr(logging, level.upper()), "", 0, message, (), None)
    return JsonFormatter().format(record)
