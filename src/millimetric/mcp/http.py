"""`POST /mcp` and `POST /mcp/account`: MCP over streamable HTTP (stateless, JSON responses)
behind our own routes.

Our key check runs first and answers the HTTP-level refusals in our error envelope (401 without a
key, 403 `key_kind_not_allowed` / `account_key_required`), then the media type, size and JSON-RPC
envelope are checked; only then does the request reach the official SDK's session manager, with
the caller on `request.state`. Each worker process has its own manager.

The SDK is imported, and its manager started, on the first MCP request rather than at start-up:
the import more than doubles the server's start-up CPU time, which a server no agent talks to
should not pay.
"""

from __future__ import annotations

import asyncio
import importlib
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from millimetric.api.body import read_body, require_json
from millimetric.api.services import Services
from millimetric.auth.guard import require_kind
from millimetric.ingest.schemas import decode_with, invalid_payload
from millimetric.mcp.tools import Caller

if TYPE_CHECKING:
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

PROJECT_KINDS = frozenset({"rk", "sk"})
ACCOUNT_KINDS = frozenset({"ak"})
MCP_BODY_LIMIT = 1024 * 1024


class JsonRpcMessage(msgspec.Struct):
    """One JSON-RPC 2.0 message, as far as it is checked before the SDK reads it (the SDK would
    take, say, a fractional or null `id` for a notification and answer 202)."""

    jsonrpc: Literal["2.0"]
    id: str | int | msgspec.UnsetType = msgspec.UNSET
    method: Annotated[str, msgspec.Meta(min_length=1)] | msgspec.UnsetType = msgspec.UNSET
    params: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET
    result: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET
    error: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET


_message_decoder = msgspec.json.Decoder(JsonRpcMessage)


def check_message(body: bytes) -> None:
    """400 `invalid_payload` unless the body is one JSON-RPC request, notification or response."""
    message = decode_with(_message_decoder, body)
    is_call = message.method is not msgspec.UNSET
    is_answer = message.id is not msgspec.UNSET and (message.result, message.error).count(msgspec.UNSET) == 1
    if is_call == is_answer:
        raise invalid_payload(
            form_error="Not a JSON-RPC message: a request or notification has `method`; a response has "
            "`id` and one of `result` or `error`"
        )


def _replay(body: bytes, receive: Receive) -> Receive:
    """`receive` for the SDK: the body already read, then whatever the client sends next."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


class McpHttp:
    """The two MCP routes of one app and the session manager behind them (started on first use,
    stopped by `close` in the app's lifespan)."""

    def __init__(self) -> None:
        self._runner: asyncio.Task[None] | None = None
        self._started: asyncio.Future[StreamableHTTPSessionManager] | None = None
        self.project_route = _Endpoint(self, PROJECT_KINDS, "key_kind_not_allowed")
        self.account_route = _Endpoint(self, ACCOUNT_KINDS, "account_key_required")

    async def manager(self) -> StreamableHTTPSessionManager:
        if self._started is None:
            self._started = asyncio.get_running_loop().create_future()
            self._runner = asyncio.create_task(self._run(self._started))
        return await asyncio.shield(self._started)

    async def _run(self, started: asyncio.Future[StreamableHTTPSessionManager]) -> None:
        """Import the SDK (in a thread: it takes a while) and keep its manager running."""
        try:
            server = await asyncio.to_thread(importlib.import_module, "millimetric.mcp.server")
            manager = server.create_manager()
            async with manager.run():
                started.set_result(manager)
                await asyncio.get_running_loop().create_future()  # until `close` cancels it
        except BaseException as error:
            if not started.done():
                started.set_exception(error if isinstance(error, Exception) else RuntimeError("MCP stopped"))
            raise

    async def close(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)


class _Endpoint:
    """An ASGI app: authenticate, check the key kind and the message, then hand it to the SDK."""

    def __init__(self, http: McpHttp, kinds: frozenset[str], refusal: str) -> None:
        self.http = http
        self.kinds = kinds
        self.refusal = refusal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        services: Services = request.app.state.services
        principal = await services.keys.authenticate(request.headers.get("authorization"))
        require_kind(principal, self.kinds, self.refusal)
        require_json(request)
        body = await read_body(request, MCP_BODY_LIMIT)
        check_message(body)
        request.state.mcp_caller = Caller(services, principal, request)
        manager = await self.http.manager()
        await manager.handle_request(scope, _replay(body, receive), send)
