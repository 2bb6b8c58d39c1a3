"""A ClickHouse stand-in for tests: the real engine (chDB) behind the part of ClickHouse's HTTP
interface that clickhouse-connect uses.

No modern ClickHouse server can be installed on the test machines, but chDB is the ClickHouse
engine in-process. This front speaks HTTP like a server does: the query in the body or `query=`,
`param_*` parameters, `database`, `session_id` and settings in the query string, the data of an
`INSERT ... FORMAT X` in the body (Native, Arrow, JSON, ... whatever the engine reads), lz4/gzip
request and response bodies, the `X-ClickHouse-*` headers and `Code: N` error text. The backend
under test cannot tell it from a server.

What it is not: one query runs at a time (chDB locks its folder, the front serialises), so
concurrency and the native protocol need a real server (`MILLIMETRIC_TEST_CLICKHOUSE_URL`).

Run: `python tests/clickhouse_standin.py --data DIR [--port N]`; prints `port N` once listening.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import lz4.frame

# Query-string keys that steer the HTTP exchange, not the query.
_TRANSPORT = {
    "query",
    "database",
    "session_id",
    "session_timeout",
    "session_check",
    "default_format",
    "compress",
    "decompress",
    "enable_http_compression",
    "wait_end_of_query",
    "send_progress_in_http_headers",
    "http_headers_progress_interval_ms",
    "query_id",
    "user",
    "password",
    "quota_key",
    "http_response_buffer_size",
    "buffer_size",
    "cancel_http_readonly_queries_on_client_close",
    "http_wait_end_of_query",
    "role",
}
_INSERT_HEAD = re.compile(rb"^\s*(INSERT\s+INTO\s+.+?)\s+FORMAT\s+(\w+)[ \t]*(?:\r?\n)?", re.IGNORECASE | re.DOTALL)
_FORMAT = re.compile(r"\sFORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE)
_CODE = re.compile(r"Code:\s*(\d+)")
_STATUS = {60: 404, 81: 404, 62: 400, 47: 400, 46: 400, 36: 400, 27: 400, 516: 401, 497: 403, 394: 500}


class StandIn:
    """The engine and the lock that serialises every query on it."""

    def __init__(self, data: Path, max_threads: int) -> None:
        import chdb.session  # only in the stand-in's own process, not in the tests importing this module

        data.mkdir(parents=True, exist_ok=True)
        self.session = chdb.session.Session(str(data / "chdb"))
        self.lock = threading.Lock()
        self.applied: dict[str, str] = {}  # settings set in the session, as SQL literals
        self.database: str | None = None
        self.spill = Path(tempfile.mkdtemp(prefix="insert-", dir=data))
        self.session.query("CREATE DATABASE IF NOT EXISTS default")
        if max_threads:
            # Test data sets are small: one thread answered them 2-3 times faster than the default.
            self.session.query(f"SET max_threads = {max_threads}")

    def run(self, sql: str, fmt: str, params: dict[str, str], settings: dict[str, str], database: str | None):
        """One query with the settings of its request; settings of earlier requests it does not
        repeat are set back to their defaults (changes only: each SET is a query of its own)."""
        wanted = {name: _literal(value) for name, value in settings.items() if re.fullmatch(r"\w+", name)}
        with self.lock:
            for name in [name for name in self.applied if name not in wanted]:
                self.session.query(f"SET {name} = DEFAULT")
                del self.applied[name]
            for name, value in wanted.items():
                if self.applied.get(name) != value:
                    self.applied.pop(name, None)
                    self.session.query(f"SET {name} = {value}")
                    self.applied[name] = value
            if database != self.database:
                self.session.query(f"USE `{(database or 'default').replace('`', '')}`")
                self.database = database
            return self.session.query(sql, fmt, params=params or None)


def _literal(value: str) -> str:
    if re.fullmatch(r"-?\d+(\.\d+)?", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _decode_body(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding == "lz4":
        return lz4.frame.decompress(body)
    if encoding == "gzip":
        return gzip.decompress(body)
    return body


class Handler(BaseHTTPRequestHandler):
    server_version = "ClickHouse-standin"
    protocol_version = "HTTP/1.1"
    standin: StandIn

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without this, Nagle's algorithm held each
        # answer ~40 ms for the client's delayed ACK.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self._guarded()

    def do_POST(self) -> None:  # noqa: N802
        self._guarded()

    def _guarded(self) -> None:
        try:
            self._handle()
        except Exception as exc:  # a request the front cannot handle: said, not a dropped connection
            traceback.print_exc()
            message = f"Code: 1001. DB::Exception: the stand-in cannot handle this request: {exc}\n".encode()
            self._send(500, message, {"X-ClickHouse-Exception-Code": "1001"})

    def _handle(self) -> None:
        url = urlsplit(self.path)
        body = self._read_body()
        if url.path in ("/ping", "/"):
            if url.path == "/ping" or not url.query and not body:
                return self._send(200, b"Ok.\n", {})
        args = dict(parse_qsl(url.query, keep_blank_values=True))
        body = _decode_body(body, self.headers.get("Content-Encoding", ""))
        params = {k[len("param_") :]: v for k, v in args.items() if k.startswith("param_")}
        settings = {k: v for k, v in args.items() if k not in _TRANSPORT and not k.startswith("param_")}
        query_id = args.get("query_id") or str(uuid.uuid4())
        # As a server does: the query is `query=` followed by the body; an INSERT's data starts
        # after its `FORMAT name` and one line break.
        whole = args.get("query", "").encode() + (b"\n" if "query" in args and body else b"") + body
        spill: Path | None = None
        found_insert = _INSERT_HEAD.match(whole)
        if found_insert and whole[found_insert.end() :].strip():
            sql, spill = self._spilled_insert(found_insert, whole[found_insert.end() :])
        else:
            sql = whole.decode()
        fmt = args.get("default_format") or "TabSeparated"
        found = _FORMAT.search(sql)
        if found:
            fmt = found.group(1)
        headers = {
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Format": fmt,
            "X-ClickHouse-Timezone": "UTC",
            "X-ClickHouse-Server-Display-Name": "standin",
        }
        try:
            result = self.standin.run(sql, fmt, params, settings, args.get("database"))
        except Exception as exc:  # the engine's own error, with its code
            text = str(exc)
            code = int(_CODE.search(text).group(1)) if _CODE.search(text) else 1000
            message = text if text.startswith("Code:") else f"Code: {code}. DB::Exception: {text}"
            headers["X-ClickHouse-Exception-Code"] = str(code)
            return self._send(_STATUS.get(code, 500), (message + "\n").encode(), headers)
        finally:
            if spill is not None:
                spill.unlink(missing_ok=True)
        data = result.bytes() if result is not None else b""
        headers["X-ClickHouse-Summary"] = json.dumps(
            {
                "read_rows": str(result.rows_read() if result is not None else 0),
                "read_bytes": str(result.bytes_read() if result is not None else 0),
                "written_rows": str(getattr(result, "rows_written", lambda: 0)() if result is not None else 0),
                "written_bytes": "0",
                "total_rows_to_read": "0",
                "result_rows": "0",
                "result_bytes": str(len(data)),
                "elapsed_ns": "0",
            }
        )
        accept = self.headers.get("Accept-Encoding", "").lower()
        if args.get("enable_http_compression") == "1" and data:
            if "lz4" in accept:
                data, headers["Content-Encoding"] = lz4.frame.compress(data), "lz4"
            elif "gzip" in accept:
                data, headers["Content-Encoding"] = gzip.compress(data, 1), "gzip"
        self._send(200, data, headers)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _spilled_insert(self, found: re.Match[bytes], data: bytes) -> tuple[str, Path]:
        """`INSERT INTO t (cols) FORMAT X` and its data, as the engine's INSERT ... SELECT from a
        file holding the data (chDB reads no request body)."""
        path = self.standin.spill / f"{uuid.uuid4().hex}.data"
        path.write_bytes(data)
        head, fmt = (part.decode() for part in found.groups())
        return f"{head} SELECT * FROM file('{path}', '{fmt}')", path

    def _send(self, status: int, data: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "text/plain; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class StandInProcess:
    """The stand-in in a child process on a free port, for fixtures; `stop` and `start` again keep
    its data (a ClickHouse server going down and coming back)."""

    def __init__(self, data: Path, max_threads: int = 1) -> None:
        self.data = data
        self.max_threads = max_threads
        self.port = 0
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://default:@127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> "StandInProcess":
        command = [sys.executable, __file__, "--data", str(self.data), "--port", str(self.port)]
        command += ["--max-threads", str(self.max_threads)]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=open(self.data.with_suffix(".log"), "ab"))
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()  # blocks until listening (or dead)
        if not line.startswith("port "):
            self.proc.kill()
            raise RuntimeError(
                f"the ClickHouse stand-in did not start: {self.data.with_suffix('.log').read_text()[-2000:]}"
            )
        self.port = int(line.split()[1])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ping", timeout=5) as answer:
                    if answer.read() == b"Ok.\n":
                        return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("the ClickHouse stand-in does not answer")

    def stop(self) -> None:
        """Gone at once, like a server that crashed or lost its network (no goodbye to anyone)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-threads", type=int, default=1, help="0: the engine's default (one per core)")
    args = parser.parse_args()
    Handler.standin = StandIn(args.data, args.max_threads)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    print(f"port {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        os._exit(0)  # chDB's threads do not hold up the exit
    return 0


if __name__ == "__main__":
    sys.exit(main())
