"""POST /v1/forget and GET /v1/forget/{job_id}: GDPR deletion, secret keys only."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from millimetric.api.body import read_body, require_json
from millimetric.api.responses import json_response
from millimetric.api.services import Services
from millimetric.auth import scopes
from millimetric.auth.guard import Principal, require_kind
from millimetric.errors import ApiError
from millimetric.ingest.schemas import decode_with

log = logging.getLogger("millimetric.api")
FORGET_BODY_LIMIT = 4096


class ForgetBody(msgspec.Struct):
    user_id: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


_decoder = msgspec.json.Decoder(ForgetBody)


async def _secret_key(request: Request) -> tuple[Services, Principal]:
    services: Services = request.app.state.services
    principal = await services.keys.authenticate(request.headers.get("authorization"))
    if principal.key.kind == "pk":
        raise ApiError("forget_requires_secret_key")
    require_kind(principal, scopes.FORGET)
    return services, principal


async def forget(request: Request) -> Response:
    services, principal = await _secret_key(request)
    require_json(request)
    body: ForgetBody = decode_with(_decoder, await read_body(request, FORGET_BODY_LIMIT))
    assert principal.project is not None
    try:
        job_id = await services.forget.request(principal.project.id, body.user_id)
    except Exception:
        log.exception("could not queue a forget job request_id=%s", request.state.request_id)
        raise ApiError("forget_failed") from None
    return json_response({"ok": True, "queued": True, "job_id": job_id})


async def forget_status(request: Request) -> Response:
    services, principal = await _secret_key(request)
    job = await asyncio.to_thread(services.control.get_forget_job, request.path_params["job_id"])
    if job is None or principal.project is None or job.project_id != principal.project.id:
        raise ApiError("not_found")
    return json_response(
        {
            "job_id": job.id,
            "status": job.status,
            "deleted_rows": job.deleted_rows,
            "created_at": job.created_at.isoformat(),
            "finished_at": job.finished_at.isoformat() if job.finished_at else None,
            "attempts": job.attempts,
            "last_error": job.last_error,
        }
    )
