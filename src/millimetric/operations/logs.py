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
import os
import re
import sys
import time

import msgspec

ACCESS = logging.getLogger("millimetric.access")
_TEXT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# `{kind}_{env}_{8 hex}_{secret}`: the prefix names a key (listed by `keys list`); the secret is cut.
_KEY = re.compile(r"\b((?:pk|sk|rk|ak)_(?:live|test)_[0-9a-fA-F]{8})_[A-Za-z0-9_\-]+")
_PATH_CHARS = 256  # a client's path is logged, a megabyte of it is not


def redact(text: str) -> str:
    return _KEY.sub(r"\1_[redacted]", text) if "_" in text else text


class TextFormatter(logging.Formatter):
    converter = staticmethod(time.gmtime)  # UTC, as the access lines and the JSON lines

    def __init__(self) -> None:
        super().__init__(_TEXT)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, process id, message, and the traceback of an
    exception (access lines, made elsewhere, have the same fields and the request's)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,  # which worker process (`serve --workers N`)
            "message": redact(record.getMessage()),
        }
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False)


class _AccessLines:
    """Access lines, written in batches: through `logging`, a line cost 70-90 us of CPU on the
    bench machine (a record, a formatter, a locked write and flush each), more than a whole
    /v1/track request is allowed. Here a line is one f-string or one msgspec encode, and lines
    reach stderr in writes of whole lines under PIPE_BUF bytes (so lines of several worker
    processes sharing a pipe never interleave), at the latest `FLUSH_SECONDS` after being made.
    Event loop only (one thread): `flush` runs there too."""

    def __init__(self) -> None:
        self.json = False
        self._lines: list[bytes] = []
        self._size = 0
        self._second = -1
        self._stamp = ""
        self._encode = msgspec.json.Encoder().encode

    def _time(self, now: float) -> str:
        second = int(now)
        if second != self._second:
            self._second = second
            moment = dt.datetime.fromtimestamp(second, dt.timezone.utc)
            self._stamp = moment.strftime("%Y-%m-%dT%H:%M:%S" if self.json else "%Y-%m-%d %H:%M:%S")
        millis = int((now - second) * 1000)
        return f"{self._stamp}.{millis:03d}+00:00" if self.json else f"{self._stamp},{millis:03d}"

    def add(self, request_id: str, method: str, path: str, route: str, status: int, seconds: float) -> None:
        path = redact(path[:_PATH_CHARS])  # a line stays far below PIPE_BUF
        duration_ms = round(seconds * 1000, 3)
        when = self._time(time.time())
        message = f"{method} {path} {status} {duration_ms:.1f}ms request_id={request_id}"
        if self.json:
            line = self._encode(
                {
                    "time": when,
                    "level": "info",
                    "logger": ACCESS.name,
                    "pid": _PID[0],
                    "message": message,
                    "request_id": request_id,
                    "method": method,
                    "path": path,
                    "route": route,
                    "status": status,
                    "duration_ms": duration_ms,
                }
            )
        else:
            line = f"{when} INFO {ACCESS.name} {message}".encode(errors="replace")
        if self._size + len(line) >= _PIPE_BUF:
            self.flush()
        self._lines.append(line + b"\n")
        self._size += len(line) + 1

    def flush(self) -> None:
        if self._lines:
            lines, self._lines, self._size = self._lines, [], 0
            _write(b"".join(lines))


def _write(data: bytes) -> None:
    try:
        sys.stderr.flush()  # lines `logging` wrote before these come first
        os.write(sys.stderr.fileno(), data)
    except (OSError, ValueError):
        pass  # no stderr (closed): as `logging` does, never fail a request over a log line


_PIPE_BUF = 4096
_PID = [os.getpid()]
_lines = _AccessLines()
FLUSH_SECONDS = 0.2


def configure(level: str, log_format: str) -> None:
    """Every logger (uvicorn's too, which then has no handlers of its own) writes through one
    stderr handler in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    _lines.json = log_format == "json"
    _PID[0] = os.getpid()


def access(request_id: str, method: str, path: str, route: str, status: int, seconds: float) -> None:
    """The line of one answered request (when `millimetric.access` logs INFO)."""
    if ACCESS.isEnabledFor(logging.INFO):
        _lines.add(request_id, method, path, route, status, seconds)


def flush() -> None:
    """Write the access lines made so far (the app does every `FLUSH_SECONDS`, and on shutdown)."""
    _lines.flush()
