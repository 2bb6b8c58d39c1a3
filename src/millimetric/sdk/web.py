"""Framework helpers: while a request is served, `track` and `identify` send the visitor's IP
and User-Agent as `context`, so the server enriches the event (country, device, visitor hash)
from the visitor rather than from the application server. The server honours `context` for
`sk_` keys only.

Behind a reverse proxy, the peer address is the proxy's: pass `trust_forwarded_for=True` (ASGI,
WSGI) only when a proxy you run sets `X-Forwarded-For`, or let your framework rewrite the peer
address (Django's `REMOTE_ADDR`) before this middleware runs."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterable, Iterator, Mapping

from millimetric.sdk.common import visitor


def visitor_context(ip: str | None, user_agent: str | None) -> dict[str, str]:
    """The `context` object for /v1/track: only the parts that are known."""
    context: dict[str, str] = {}
    if ip:
        context["ip"] = ip
    if user_agent:
        context["user_agent"] = user_agent
    return context


def forwarded_ip(peer: str | None, forwarded_for: str | None, trust_forwarded_for: bool) -> str | None:
    """The visitor's address: the first `X-Forwarded-For` hop when the proxy is trusted."""
    if trust_forwarded_for and forwarded_for:
        first = forwarded_for.split(",")[0].strip()
        if first:
            return first
    return peer


@contextlib.contextmanager
def visiting(ip: str | None, user_agent: str | None) -> Iterator[None]:
    """Events tracked inside the block carry this visitor's context (for custom integrations)."""
    token = visitor.set(visitor_context(ip, user_agent))
    try:
        yield
    finally:
        visitor.reset(token)


class ASGIMiddleware:
    """`app = ASGIMiddleware(app)` (Starlette, FastAPI, Django's ASGI handler, ...)."""

    def __init__(self, app: Callable[..., Any], trust_forwarded_for: bool = False) -> None:
        self.app = app
        self.trust_forwarded_for = trust_forwarded_for

    async def __call__(self, scope: Mapping[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {name.lower(): value.decode("latin-1") for name, value in scope.get("headers", ())}
        peer = scope["client"][0] if scope.get("client") else None
        ip = forwarded_ip(peer, headers.get(b"x-forwarded-for"), self.trust_forwarded_for)
        with visiting(ip, headers.get(b"user-agent")):
            await self.app(scope, receive, send)


class WSGIMiddleware:
    """`app.wsgi_app = WSGIMiddleware(app.wsgi_app)` (Flask), or around any WSGI application.
    The context covers the view; events tracked while a streamed body is iterated do not get it."""

    def __init__(self, app: Callable[..., Iterable[bytes]], trust_forwarded_for: bool = False) -> None:
        self.app = app
        self.trust_forwarded_for = trust_forwarded_for

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        ip = forwarded_ip(environ.get("REMOTE_ADDR"), environ.get("HTTP_X_FORWARDED_FOR"), self.trust_forwarded_for)
        with visiting(ip, environ.get("HTTP_USER_AGENT")):
            return self.app(environ, start_response)


def init_flask(app: Any, trust_forwarded_for: bool = False) -> None:
    """Flask: wraps `app.wsgi_app` (Flask itself is not imported)."""
    app.wsgi_app = WSGIMiddleware(app.wsgi_app, trust_forwarded_for)


class DjangoMiddleware:
    """Django: add `"millimetric.sdk.web.DjangoMiddleware"` to `MIDDLEWARE` (Django is not
    imported). Reads `REMOTE_ADDR`, which Django's deployment decides for proxies."""

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        meta = request.META
        with visiting(meta.get("REMOTE_ADDR"), meta.get("HTTP_USER_AGENT")):
            return self.get_response(request)
