"""Log lines: plain text or JSON (`MILLIMETRIC_LOG_FORMAT=json`), one line per request.

What may reach a log line is decided where lines are made: the access line is built from fixed
fields (request id, method, path without its query string, route, status, duration), never from
headers, client addresses or bodies. As a second guard, anything shaped like an API key has its
secret cut off before a line is written, whoever logged it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys

ACCESS = logging.getLogger("millimetric.access")
_TEXT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# `{kind}_{env}_{8 hex}_{secret}`: the prefix names a key (listed by `keys list`); the secret is cut.
_KEY = re.compile(r"\b((?:pk|sk|rk|ak)_(?:live|test)_[0-9a-fA-F]{8})_[A-Za-z0-9_\-]+")
_PATH_CHARS = 256  # a client's path is logged, a megabyte of it is not
_ACCESS_FIELDS = ("request_id", "method", "path", "route", "status", "duration_ms")


def redact(text: str) -> str:
    return _KEY.sub(r"\1_[redacted]", text) if "_" in text else text


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(_TEXT)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, process id, message, the access fields when
    present, and the traceback of an exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,  # which worker process (`serve --workers N`)
            "message": redact(record.getMessage()),
        }
        for field in _ACCESS_FIELDS:
            if field in record.__dict__:
                line[field] = record.__dict__[field]
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False)


def configure(level: str, log_format: str) -> None:
    """Every logger (uvicorn's too, which then has no handlers of its own) writes through one
    stderr handler in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def access(request_id: str, method: str, path: str, route: str, status: int, seconds: float) -> None:
    """The line of one answered request."""
    if ACCESS.isEnabledFor(logging.INFO):
        path = redact(path[:_PATH_CHARS])
        duration_ms = round(seconds * 1000, 3)
        ACCESS.info(
            "%s %s %d %.1fms request_id=%s",
            method,
            path,
            status,
            duration_ms,
            request_id,
            extra={
                "request_id": request_id,
                "method": method,
                "path": path,
                "route": route,
                "status": status,
                "duration_ms": duration_ms,
            },
        )
