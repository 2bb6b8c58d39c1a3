"""Resolve a bearer token to a key and its project: format, hash check, cache, scopes, origin."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Callable, NamedTuple

from millimetric.auth.keys import parse_key, secret_matches
from millimetric.auth.origins import origin_allowed
from millimetric.errors import ApiError
from millimetric.store.control import ControlPlane, Project, StoredKey, utcnow

CACHE_MAX_ENTRIES = 10_000


class Principal(NamedTuple):
    key: StoredKey
    project: Project | None  # None for account-level (ak) keys


class KeyResolver:
    """Caches verified keys per process for `ttl` seconds, so the hot path does no database I/O.

    A revocation done elsewhere (the CLI, another process) takes effect within the TTL.
    `last_used_at` is collected in memory and written by `flush_last_used` in one statement.
    """

    def __init__(self, control: ControlPlane, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._control = control
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[str, tuple[float, StoredKey, Project | None]] = {}
        self._last_used: dict[str, dt.datetime] = {}

    async def authenticate(self, authorization: str | None) -> Principal:
        if not authorization or not authorization[:7].lower() == "bearer ":
            raise ApiError("missing_bearer_token")
        token = authorization[7:].strip()
        if not token:
            raise ApiError("missing_bearer_token")
        parsed = parse_key(token)
        if parsed is None:
            raise ApiError("malformed_api_key")
        key, project = await self._lookup(parsed.prefix)
        if key is None or key.revoked_at is not None:
            raise ApiError("invalid_api_key")
        if key.kind != parsed.kind:
            raise ApiError("key_kind_mismatch")
        if not secret_matches(parsed.secret, self._control.pepper, key.secret_hash):
            raise ApiError("invalid_api_key")
        self._last_used[key.prefix] = utcnow()
        return Principal(key, project)

    async def _lookup(self, prefix: str) -> tuple[StoredKey | None, Project | None]:
        now = self._clock()
        cached = self._cache.get(prefix)
        if cached and cached[0] > now:
            return cached[1], cached[2]
        key, project = await asyncio.to_thread(self._load, prefix)
        if key is not None:
            if len(self._cache) >= CACHE_MAX_ENTRIES:
                self._cache.clear()
            self._cache[prefix] = (now + self._ttl, key, project)
        return key, project

    def _load(self, prefix: str) -> tuple[StoredKey | None, Project | None]:
        key = self._control.find_key(prefix)
        project = self._control.get_project(key.project_id) if key and key.project_id else None
        return key, project

    def invalidate(self, prefix: str | None = None) -> None:
        """Drop one cached key (or all) now, e.g. after a revocation or a project change here."""
        if prefix is None:
            self._cache.clear()
        else:
            self._cache.pop(prefix, None)

    def flush_last_used(self) -> None:
        pending, self._last_used = self._last_used, {}
        self._control.touch_keys(pending)


def require_kind(principal: Principal, allowed: frozenset[str], code: str = "insufficient_scope") -> None:
    if principal.key.kind not in allowed:
        raise ApiError(code)


def require_origin(principal: Principal, origin: str | None) -> None:
    """Browser keys must come from an allowed origin; server and read keys ignore Origin."""
    if principal.key.kind == "pk":
        allowed = principal.project.allowed_origins if principal.project else ()
        if not origin_allowed(origin, allowed):
            raise ApiError("origin_not_allowed")
