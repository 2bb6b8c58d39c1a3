"""The Starlette application: routes, error handling, and the lifespan that owns the stores."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import logging
from typing import AsyncIterator, Awaitable, Callable, TypeVar

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from millimetric.api import admin, classify, dashboard, docs, forget, health, ingest, metrics, read, snippet
from millimetric.api.cors import CorsMiddleware
from millimetric.api.middleware import RequestIdMiddleware
from millimetric.api.responses import error_response, json_response
from millimetric.api.services import Services
from millimetric.auth.guard import CHANGES_POLL_SECONDS
from millimetric.compat import posthog, segment
from millimetric.compat.body import is_basic
from millimetric.errors import ApiError, overloaded
from millimetric.ingest.visit import SALT_PREPARE_SECONDS, TOMBSTONE_REFRESH_SECONDS
from millimetric.mcp.http import McpHttp
from millimetric.operations import logs
from millimetric.operations import metrics as operations_metrics
from millimetric.privacy.retention import RETENTION_SWEEP_SECONDS, enforce_retention
from millimetric.settings import Settings
from millimetric.store.interface import StoreError, StoreOverloaded, StoreTimeout

log = logging.getLogger("millimetric.api")
COUNTERS_FLUSH_SECONDS = 30.0
T = TypeVar("T")


async def _batch(request: Request) -> Response:
    """Segment's libraries post to `{host}/v1/batch` with Basic credentials: with this server's
    root as their host, that is Segment's batch, not ours (which takes only Bearer keys)."""
    if is_basic(request.headers.get("authorization")):
        return await segment.batch(request)
    return await ingest.batch(request)


ROUTES = [
    Route("/v1/track", ingest.track, methods=["POST"]),
    Route("/v1/batch", _batch, methods=["POST"]),
    Route("/v1/identify", ingest.identify, methods=["POST"]),
    Route("/v1/forget", forget.forget, methods=["POST"]),
    Route("/v1/forget/{job_id}", forget.forget_status, methods=["GET"]),
    Route("/v1/classify", classify.classify_hit, methods=["GET"]),
    Route("/healthz", health.healthz, methods=["GET"]),
    Route("/v1/query", read.query, methods=["GET"]),
    Route("/v1/stats", read.stats, methods=["GET"]),
    Route("/v1/sources", read.sources, methods=["GET"]),
    Route("/v1/funnel", read.funnel, methods=["GET"]),
    Route("/openapi.json", docs.openapi_json, methods=["GET"]),
    Route("/admin/login", admin.login, methods=["POST"]),
    Route("/admin/me", admin.me, methods=["GET"]),
    Route("/admin/projects", admin.list_projects, methods=["GET"]),
    Route("/admin/projects", admin.create_project, methods=["POST"]),
    Route("/admin/projects/{id}", admin.get_project, methods=["GET"]),
    Route("/admin/projects/{id}", admin.patch_project, methods=["PATCH"]),
    Route("/admin/projects/{id}", admin.delete_project, methods=["DELETE"]),
    Route("/admin/projects/{id}/keys", admin.list_keys, methods=["GET"]),
    Route("/admin/projects/{id}/keys", admin.create_project_key, methods=["POST"]),
    Route("/admin/accounts/{id}/keys", admin.create_account_key, methods=["POST"]),
    Route("/admin/keys/{prefix}", admin.revoke_key, methods=["DELETE"]),
    Route("/", dashboard.index, methods=["GET"]),
    Route("/assets/{name}", dashboard.asset, methods=["GET"]),
    Route("/metrics", metrics.metrics_text, methods=["GET"]),
    Route("/v1/a.js", snippet.a_js, methods=["GET"]),
    Route("/segment/v1/batch", segment.batch, methods=["POST"]),
    *(
        Route(f"/segment/v1/{call.__name__}", call, methods=["POST"])
        for call in (segment.track, segment.page, segment.screen, segment.identify, segment.group, segment.alias)
    ),
    Route("/posthog/batch/", posthog.batch, methods=["POST"]),
    Route("/posthog/capture/", posthog.capture, methods=["POST"]),
    Route("/posthog/e/", posthog.e, methods=["POST"]),
]


async def _bench_noop(_request: Request) -> Response:
    """The ceiling for bench/ingest.py: same app and middleware, no work (MILLIMETRIC_BENCH_ROUTES=1)."""
    return json_response({"ok": True})


BENCH_ROUTES = [Route("/bench/noop", _bench_noop, methods=["POST"])]


async def _api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def _store_error(_request: Request, exc: Exception) -> Response:
    """The event store is wedged or full (503, retry later) or unreachable (502)."""
    log.error("event store: %s", exc)
    if isinstance(exc, (StoreTimeout, StoreOverloaded)):
        return error_response(overloaded())
    return error_response(ApiError("upstream_failed"))


async def _http_error(_request: Request, exc: Exception) -> Response:
    """Starlette's routing errors, in our envelope (404 not_found, 405 method_not_allowed)."""
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_payload")
    return error_response(ApiError(code, headers=dict(exc.headers or {})))


async def _in_thread(chore: Callable[[], T]) -> T:
    """`asyncio.to_thread`, except that a cancellation (shutdown) lets the thread end first, so
    that the stores are not closed under it."""
    running = asyncio.ensure_future(asyncio.to_thread(chore))
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        await asyncio.wait([running])
        raise


async def _every(
    seconds: float,
    chore: Callable[[], object] | Callable[[], Awaitable[object]],
    what: str,
    first_after: float | None = None,
) -> None:
    """Run a chore periodically, surviving failures: a blocking one in a thread, off the event
    loop; a coroutine function (one that does its blocking part in a thread itself) on the loop."""
    on_loop = inspect.iscoroutinefunction(chore)
    await asyncio.sleep(seconds if first_after is None else first_after)
    while True:
        try:
            if on_loop:
                await chore()  # type: ignore[misc]
            else:
                await _in_thread(chore)
        except Exception:
            log.exception("could not %s", what)
        await asyncio.sleep(seconds)


def create_app(settings: Settings, shared_store: object | None = None, chores: bool = True) -> Starlette:
    """`shared_store` and `chores` are for worker processes (`millimetric.api.server`): the handle
    on the supervisor's event store, and whether this worker runs the retention and forget chores."""

    mcp = McpHttp()  # one per app (per worker process); closed by the lifespan below

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        services = await asyncio.to_thread(Services.open, settings, shared_store)
        app.state.services = services
        # Long-lived start-up objects (parsers, data files, caches) need no more GC scans; without
        # this, full collections every ~0.5 s paused the loop 35-50 ms (track p99 53 ms -> 17 ms).
        gc.collect()
        gc.freeze()
        # Requests allocate many short-lived objects; collect the young generation less often.
        gc.set_threshold(50_000, 20, 20)

        async def publish_metrics() -> None:
            operations_metrics.set_queue_depth(services.writer.queued_events)
            operations_metrics.publish()

        async def flush_access_lines() -> None:
            logs.flush()

        background = [
            asyncio.create_task(_every(COUNTERS_FLUSH_SECONDS, services.record_counters, "record counters")),
            asyncio.create_task(
                _every(operations_metrics.PUBLISH_SECONDS, publish_metrics, "publish the request metrics")
            ),
            asyncio.create_task(_every(logs.FLUSH_SECONDS, flush_access_lines, "write the access lines")),
            asyncio.create_task(
                _every(TOMBSTONE_REFRESH_SECONDS, services.visits.refresh_tombstones, "refresh tombstones")
            ),
            # Services.open prepared today's and tomorrow's salts; keep them a day ahead.
            asyncio.create_task(_every(SALT_PREPARE_SECONDS, services.visits.prepare_salts, "prepare the daily salts")),
            asyncio.create_task(
                _every(CHANGES_POLL_SECONDS, services.keys.follow_changes, "follow changes", first_after=0)
            ),
        ]
        if chores:
            background += [
                asyncio.create_task(services.forget.run_forever()),
                asyncio.create_task(
                    _every(
                        RETENTION_SWEEP_SECONDS,
                        lambda: enforce_retention(services.control, services.events),
                        "delete events past retention",
                        first_after=0,
                    )
                ),
            ]
        try:
            yield
        finally:
            await mcp.close()
            for task in background:
                task.cancel()
            # Let chores caught mid-write (counters, a forget job, a sweep) end before the stores close.
            await asyncio.gather(*background, return_exceptions=True)
            if services.limiter is not None:
                await services.limiter.close()
            if services.login_limiter is not services.limiter:
                await services.login_limiter.close()
            await services.writer.close()  # nothing accepted is dropped on shutdown
            try:
                await services.record_counters()  # taken on the loop; `close` writes anything left
            except Exception:
                log.exception("could not record counters")
            await asyncio.to_thread(services.close)
            operations_metrics.publish()
            operations_metrics.process_exiting()
            logs.flush()
            gc.unfreeze()  # let the last collection see them (DuckDB's bindings warn of leaks otherwise)

    return Starlette(
        routes=ROUTES
        + [
            Route("/mcp", mcp.project_route, methods=["POST"]),
            Route("/mcp/account", mcp.account_route, methods=["POST"]),
        ]
        + (BENCH_ROUTES if settings.bench_routes else []),
        middleware=[Middleware(RequestIdMiddleware), Middleware(CorsMiddleware)],
        exception_handlers={ApiError: _api_error, HTTPException: _http_error, StoreError: _store_error},
        lifespan=lifespan,
    )
