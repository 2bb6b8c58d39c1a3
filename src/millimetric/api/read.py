"""GET /v1/query, /v1/stats, /v1/sources, /v1/funnel: authenticate, resolve the project, validate, read."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response

from millimetric.api.responses import json_response
from millimetric.api.services import Services
from millimetric.auth import scopes
from millimetric.auth.access import looks_like_session, readable_project
from millimetric.auth.guard import require_kind
from millimetric.errors import ApiError
from millimetric.query import execute, params
from millimetric.query.cursor import CursorCodec
from millimetric.query.funnel import run_funnel
from millimetric.store.control import Project


async def _reader(request: Request) -> tuple[Services, Project]:
    """The project this read is about: the key's own (rk_, sk_), or `project_id` for ak_ keys
    and for a user's session token (a project of one of the user's accounts).

    A project the key may not read answers 404, exactly like one that does not exist.
    """
    services: Services = request.app.state.services
    authorization = request.headers.get("authorization")
    requested = request.query_params.get("project_id")
    if looks_like_session(authorization):  # a signed-in user (the dashboard): a project of theirs
        claims = await services.sessions.verify(authorization)
        if not requested:
            raise params.invalid("project_id", "required with a user session")
        found = await asyncio.to_thread(readable_project, services.control, claims, requested)
        if found is None:
            raise ApiError("not_found")
        return services, found
    principal = await services.keys.authenticate(authorization)
    require_kind(principal, scopes.READ)
    if principal.project is not None:
        if requested is not None and requested not in (principal.project.id, principal.project.slug):
            raise ApiError("not_found")
        return services, principal.project
    if not requested:
        raise params.invalid("project_id", "required with an account key (ak_)")
    project = await asyncio.to_thread(services.control.get_project, requested)
    if project is None or project.account_id != principal.key.account_id:
        raise ApiError("not_found")
    return services, project


async def query(request: Request) -> Response:
    services, project = await _reader(request)
    plan = params.rows_plan(request.query_params, project.retention_days)
    codec = CursorCodec(services.control.pepper)
    token = request.query_params.get("cursor")
    if token is not None:
        plan = codec.apply(token, project.id, plan)
    return json_response(await asyncio.to_thread(execute.events_page, services.events, codec, project.id, plan))


async def stats(request: Request) -> Response:
    services, project = await _reader(request)
    plan = params.stats_plan(request.query_params, project.retention_days)
    return json_response(await asyncio.to_thread(execute.stats, services.events, project.id, plan))


async def sources(request: Request) -> Response:
    services, project = await _reader(request)
    plan = params.sources_plan(request.query_params, project.retention_days)
    return json_response(await asyncio.to_thread(execute.sources, services.events, project.id, plan))


async def funnel(request: Request) -> Response:
    services, project = await _reader(request)
    answer = await asyncio.to_thread(
        run_funnel, services.events, project.id, request.query_params, project.retention_days
    )
    return json_response(answer)
