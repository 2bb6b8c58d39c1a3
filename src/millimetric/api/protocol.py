"""uvicorn's httptools protocol with the limits it lacks, and JSON for its own refusals.

httptools buffers a request head of any size and waits for a request forever; here a head larger
than `MAX_HEAD_BYTES` gets 431, a request (head and body) that takes longer than
`READ_TIMEOUT_SECONDS` to arrive gets 408, and unparsable HTTP gets the JSON envelope instead of
uvicorn's plain-text 400. Enforcing the read deadline here costs one timer per request instead of
a timeout scope around every body read in the app.
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus

import msgspec
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from millimetric.api.middleware import new_request_id
from millimetric.errors import STATUS

MAX_HEAD_BYTES = 64 * 1024
READ_TIMEOUT_SECONDS = 10.0


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    _in_head = True
    _head_bytes = 0
    _read_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._next_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_read_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            end = data.find(b"\r\n\r\n")
            self._head_bytes += len(data) if end < 0 else end + 4
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse("headers_too_large")
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._next_request()

    def send_400_response(self, msg: str) -> None:
        self._refuse("malformed_request")

    def _next_request(self) -> None:
        self._in_head, self._head_bytes = True, 0
        self._stop_read_timer()
        self._read_timer = asyncio.get_running_loop().call_later(READ_TIMEOUT_SECONDS, self._read_timed_out)

    def _stop_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        # An idle keep-alive connection is uvicorn's to close; a started request is too slow.
        if not self._in_head or self._head_bytes:
            self._refuse("request_timeout")

    def _refuse(self, code: str) -> None:
        if self.transport.is_closing():
            return
        status = STATUS[code]
        body = msgspec.json.encode({"error": code})
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"x-request-id: %s\r\nconnection: close\r\n\r\n%s"
            % (status, HTTPStatus(status).phrase.encode(), len(body), new_request_id(), body)
        )
        self.transport.close()
