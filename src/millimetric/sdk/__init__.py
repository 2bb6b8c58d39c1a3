"""The Python SDK: `Client` and `AsyncClient` send events in batches with retries and never raise
into the caller; read methods page through cursors. Needs only httpx (no server code)."""

from millimetric.sdk.aio import AsyncClient
from millimetric.sdk.client import Client
from millimetric.sdk.common import MillimetricError, QueryRow
from millimetric.sdk.web import ASGIMiddleware, DjangoMiddleware, WSGIMiddleware, init_flask, visiting, visitor_context

__all__ = [
    "ASGIMiddleware",
    "AsyncClient",
    "Client",
    "DjangoMiddleware",
    "MillimetricError",
    "QueryRow",
    "WSGIMiddleware",
    "init_flask",
    "visiting",
    "visitor_context",
]
