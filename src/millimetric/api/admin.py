"""The admin API (`/admin/*`): sign-in, the caller, projects and keys, for a user's JWT.

Handlers authenticate the session first, then read and validate the body; a project or key of an
account the caller is not a member of answers 404 `not_found`, exactly like one that does not
exist. The work itself is in `millimetric.admin`, shared with the CLI.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Annotated, Any, Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from millimetric.admin import keys as admin_keys
from millimetric.admin import projects as admin_projects
from millimetric.admin import users as admin_users
from millimetric.api.body import read_body, require_json
from millimetric.api.client import client_ip
from millimetric.api.responses import json_response
from millimetric.api.services import Services
from millimetric.auth.passwords import MAX_PASSWORD_CHARS
from millimetric.auth.ratelimit import Limit, retry_after_seconds
from millimetric.errors import ApiError
from millimetric.ingest.schemas import FieldErrors, decode_with, invalid_payload
from millimetric.store.control import Project, ProjectChanges

ADMIN_BODY_LIMIT = 16 * 1024
# Per client address and per email: 10 attempts at once, then one every 6 seconds.
LOGIN_LIMIT = Limit(rate=1 / 6, burst=10)

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Origin = Annotated[str, msgspec.Meta(min_length=1, max_length=300)]
Origins = Annotated[list[Origin], msgspec.Meta(max_length=admin_projects.MAX_ORIGINS)]
Env = Literal["live", "test"]


class LoginBody(msgspec.Struct, forbid_unknown_fields=False):
    email: Annotated[str, msgspec.Meta(min_length=1, max_length=320)]
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_PASSWORD_CHARS)]


class CreateProjectBody(msgspec.Struct):
    name: Name
    allowed_origins: Origins = []
    account_id: Annotated[str, msgspec.Meta(min_length=1, max_length=36)] | None = None


class PatchProjectBody(msgspec.Struct):
    name: Name | msgspec.UnsetType = msgspec.UNSET
    allowed_origins: Origins | msgspec.UnsetType = msgspec.UNSET
    retention_days: int | None | msgspec.UnsetType = msgspec.UNSET
    keep_bots: bool | msgspec.UnsetType = msgspec.UNSET
    rate_limits: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET


class ProjectKeyBody(msgspec.Struct):
    kind: Literal["pk", "sk", "rk"]
    env: Env = "live"
    name: Name | None = None


class AccountKeyBody(msgspec.Struct):
    kind: Literal["ak"]
    env: Env = "live"
    name: Name | None = None


_login = msgspec.json.Decoder(LoginBody)
_create_project = msgspec.json.Decoder(CreateProjectBody)
_patch_project = msgspec.json.Decoder(PatchProjectBody)
_project_key = msgspec.json.Decoder(ProjectKeyBody)
_account_key = msgspec.json.Decoder(AccountKeyBody)


async def _body(request: Request, decoder: msgspec.json.Decoder) -> Any:
    require_json(request)
    return decode_with(decoder, await read_body(request, ADMIN_BODY_LIMIT))


async def _caller(request: Request) -> tuple[Services, admin_users.Caller]:
    services: Services = request.app.state.services
    claims = await services.sessions.verify(request.headers.get("authorization"))
    return services, await asyncio.to_thread(admin_users.caller, services.control, claims)


async def _project(request: Request) -> tuple[Services, admin_users.Caller, Project]:
    services, caller = await _caller(request)
    project = await asyncio.to_thread(services.control.get_project, request.path_params["id"])
    if project is None or project.account_id not in caller.account_ids:
        raise ApiError("not_found")
    return services, caller, project


# sign-in ------------------------------------------------------------------------------------
async def login(request: Request) -> Response:
    services: Services = request.app.state.services
    body: LoginBody = await _body(request, _login)
    email = admin_users.normalise_email(body.email)
    address = client_ip(request, services.trusted_proxies)
    email_key = hashlib.sha256(email.encode()).hexdigest()[:32]
    for bucket in (f"login:ip:{address}", f"login:email:{email_key}"):
        wait = await services.login_limiter.take(bucket, LOGIN_LIMIT)
        if wait > 0:
            seconds = retry_after_seconds(wait)
            raise ApiError("rate_limited", headers={"Retry-After": str(seconds)}, extra={"retry_after_s": seconds})
    user = await asyncio.to_thread(admin_users.authenticate, services.control, email, body.password)
    return json_response(services.sessions.issue(user.id, user.email))


async def me(request: Request) -> Response:
    _services, caller = await _caller(request)
    return json_response(
        {
            "user": {"id": caller.user.id, "email": caller.user.email},
            "accounts": [{"id": a.account_id, "name": a.name, "role": a.role} for a in caller.accounts],
        }
    )


# projects -----------------------------------------------------------------------------------
async def list_projects(request: Request) -> Response:
    services, caller = await _caller(request)
    found = await asyncio.to_thread(services.control.list_projects, caller.account_ids)
    return json_response({"projects": [p.settings() for p in found]})


async def create_project(request: Request) -> Response:
    services, caller = await _caller(request)
    body: CreateProjectBody = await _body(request, _create_project)
    account_id = body.account_id or caller.accounts[0].account_id
    if account_id not in caller.account_ids:
        errors = FieldErrors()
        errors.add("account_id", "Not one of your accounts (see GET /admin/me)")
        raise invalid_payload(errors)
    project, tokens = await asyncio.to_thread(
        admin_projects.create, services.control, body.name, body.allowed_origins, account_id
    )
    return json_response({"project": project.settings(), "keys": tokens}, status_code=201)


async def get_project(request: Request) -> Response:
    _services, _caller_, project = await _project(request)
    return json_response({"project": project.settings()})


async def patch_project(request: Request) -> Response:
    services, _caller_, project = await _project(request)
    body: PatchProjectBody = await _body(request, _patch_project)

    def given(value: Any) -> Any:
        return None if value is msgspec.UNSET else value

    changes = ProjectChanges(
        name=given(body.name),
        allowed_origins=given(body.allowed_origins),
        retention_days=given(body.retention_days),
        clear_retention=body.retention_days is None,
        keep_bots=given(body.keep_bots),
        rate_limits=given(body.rate_limits),
    )
    updated = await asyncio.to_thread(admin_projects.update, services.control, project, changes)
    services.keys.invalidate()  # this process applies the change at once, the others within seconds
    return json_response({"project": updated.settings()})


async def delete_project(request: Request) -> Response:
    services, _caller_, project = await _project(request)
    job_id = await asyncio.to_thread(admin_projects.delete, services.control, project)
    services.keys.invalidate()  # this process refuses the project's keys at once
    services.forget.wake()
    return json_response({"deleted": True, "job_id": job_id})


# keys ---------------------------------------------------------------------------------------
async def list_keys(request: Request) -> Response:
    services, _caller_, project = await _project(request)
    found = await asyncio.to_thread(services.control.list_keys, project)
    return json_response({"keys": [admin_keys.view(k) for k in found]})


async def create_project_key(request: Request) -> Response:
    services, _caller_, project = await _project(request)
    body: ProjectKeyBody = await _body(request, _project_key)
    created = await asyncio.to_thread(
        admin_keys.mint_project_key, services.control, project, body.kind, body.env, body.name
    )
    return json_response(created, status_code=201)


async def create_account_key(request: Request) -> Response:
    services, caller = await _caller(request)
    account_id = request.path_params["id"]
    if account_id not in caller.account_ids:
        raise ApiError("not_found")
    body: AccountKeyBody = await _body(request, _account_key)
    created = await asyncio.to_thread(admin_keys.mint_for_account, services.control, account_id, body.env, body.name)
    return json_response(created, status_code=201)


async def revoke_key(request: Request) -> Response:
    services, caller = await _caller(request)
    prefix = request.path_params["prefix"]
    await asyncio.to_thread(admin_keys.revoke, services.control, prefix, caller.account_ids)
    services.keys.invalidate(prefix)  # this process at once; the others within a second or two
    return json_response({"revoked": True})
