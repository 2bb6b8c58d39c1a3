"""Minting, listing and revoking API keys; secrets are shown once and never stored."""

from __future__ import annotations

from typing import Any

from millimetric.auth.keys import ENVS, KINDS, PROJECT_KEY_KINDS, parse_key
from millimetric.errors import ApiError
from millimetric.ingest.schemas import FieldErrors
from millimetric.store.control import ControlPlane, Project, StoredKey

KEY_FIELDS = ("prefix", "kind", "env", "name", "created_at", "last_used_at", "revoked_at")


def view(key: StoredKey) -> dict[str, Any]:
    """A key as listings show it: never its secret or hash."""
    out: dict[str, Any] = {}
    for field in KEY_FIELDS:
        value = getattr(key, field)
        out[field] = value.isoformat() if hasattr(value, "isoformat") else value
    return out


def check_kind_env(kind: str, env: str, allowed: tuple[str, ...] = KINDS) -> None:
    errors = FieldErrors()
    if kind not in allowed:
        errors.add("kind", f"Expected one of {', '.join(allowed)}")
    if env not in ENVS:
        errors.add("env", f"Expected one of {', '.join(ENVS)}")
    errors.raise_if_any()


def mint_for_project(
    control: ControlPlane, project: Project, kind: str, env: str = "live", name: str | None = None
) -> dict[str, Any]:
    """A new project key (an `ak` key minted here belongs to the project's account)."""
    check_kind_env(kind, env)
    return _created(control, control.create_key(project, kind, env, name))


def mint_project_key(
    control: ControlPlane, project: Project, kind: str, env: str = "live", name: str | None = None
) -> dict[str, Any]:
    """What the admin API mints for a project: pk, sk or rk (account keys have their own route)."""
    check_kind_env(kind, env, PROJECT_KEY_KINDS)
    return _created(control, control.create_key(project, kind, env, name))


def mint_for_account(
    control: ControlPlane, account_id: str, env: str = "live", name: str | None = None
) -> dict[str, Any]:
    check_kind_env("ak", env)
    return _created(control, control.create_account_key(account_id, env, name))


def _created(control: ControlPlane, token: str) -> dict[str, Any]:
    parsed = parse_key(token)
    assert parsed is not None
    stored = control.find_key(parsed.prefix)
    assert stored is not None
    return {"key": token} | view(stored)


def revoke(control: ControlPlane, prefix: str, account_ids: set[str] | None = None) -> None:
    """Revoke a key (already revoked is fine); not_found when there is no such key, or it belongs
    to none of `account_ids` (when given). Every server refuses it within seconds."""
    key = control.find_key(prefix)
    if key is None or (account_ids is not None and key.account_id not in account_ids):
        raise ApiError("not_found")
    control.revoke_key(prefix)
