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
UNKNOWN_MAX_ENTRIES = 10_000  # remembered unknown prefixes; the oldest go first
UNKNOWN_TTL_SECONDS = 5.0  # a key created meanwhile works after at most this long
MAX_CONCURRENT_LOOKUPS = 4  # thread-pool workers that key lookups may hold at once
CHANGES_POLL_SECONDS = 1.0  # how often each process reads the control-plane change counter


class Principal(NamedTuple):
    key: StoredKey
    project: Project | None  # None for account-level (ak) keys


class KeyResolver:
    """Caches verified keys per process for `ttl` seconds, so the hot path does no database I/O.

    Every change to keys or project settings bumps the control plane's change counter; each
    process reads it every `CHANGES_POLL_SECONDS` (`follow_changes`) and drops its whole cache when
    it moved, so a revocation done elsewhere (the CLI, the admin API in another process, another
    node) takes effect within a second or two; the TTL bounds staleness should polling fail. Prefixes
    found in no key are remembered too, for `unknown_ttl` seconds (at most `UNKNOWN_MAX_ENTRIES`):
    a flood of the same made-up token costs one lookup, and a key created meanwhile works within
    seconds. Concurrent lookups of one prefix share one query, and at most
    `max_concurrent_lookups` run at once, so made-up tokens cannot take the whole thread pool.

    `last_used_at` is collected in memory on the event loop; the loop takes the collected times
    (`take_last_used`) and a thread writes them in one statement (`write_last_used`).
    """

    def __init__(
        self,
        control: ControlPlane,
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
        unknown_ttl: float = UNKNOWN_TTL_SECONDS,
        unknown_max_entries: int = UNKNOWN_MAX_ENTRIES,
        max_concurrent_lookups: int = MAX_CONCURRENT_LOOKUPS,
    ) -> None:
        self._control = control
        self._ttl = ttl
        self._clock = clock
        self._unknown_ttl = unknown_ttl
        self._unknown_max = unknown_max_entries
        self._cache: dict[str, tuple[float, StoredKey, Project | None]] = {}
        self._unknown: dict[str, float] = {}  # prefix -> expiry, oldest first
        self._lookups: dict[str, asyncio.Future[tuple[StoredKey | None, Project | None]]] = {}
        self._lookup_slots = asyncio.Semaphore(max_concurrent_lookups)
        self._generation = 0  # bumped by `invalidate`: a lookup begun before caches nothing
        self._last_used: dict[str, dt.datetime] = {}
        self._seen_version: int | None = None

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
        unknown_until = self._unknown.get(prefix)
        if unknown_until is not None:
            if unknown_until > now:
                return None, None
            del self._unknown[prefix]
        lookup = self._lookups.get(prefix)
        if lookup is None:  # the first asker queries; the others wait for its answer
            lookup = asyncio.ensure_future(self._load_and_cache(prefix))
            self._lookups[prefix] = lookup
            lookup.add_done_callback(lambda done: self._lookup_done(prefix, done))
        # One asker giving up (its client went away) must not cancel the others' answer.
        return await asyncio.shield(lookup)

    def _lookup_done(self, prefix: str, done: asyncio.Future) -> None:
        if self._lookups.get(prefix) is done:
            del self._lookups[prefix]
        if not done.cancelled():
            done.exception()  # retrieved here, so that no waiter left is no warning either

    async def _load_and_cache(self, prefix: str) -> tuple[StoredKey | None, Project | None]:
        generation = self._generation
        async with self._lookup_slots:
            key, project = await asyncio.to_thread(self._load, prefix)
        if generation != self._generation:  # invalidated meanwhile: the answer may be stale
            return key, project
        now = self._clock()
        if key is not None:
            if len(self._cache) >= CACHE_MAX_ENTRIES:
                self._cache.clear()
            self._cache[prefix] = (now + self._ttl, key, project)
        else:
            while len(self._unknown) >= self._unknown_max:
                del self._unknown[next(iter(self._unknown))]
            self._unknown[prefix] = now + self._unknown_ttl
        return key, project

    def _load(self, prefix: str) -> tuple[StoredKey | None, Project | None]:
        key = self._control.find_key(prefix)
        project = self._control.get_project(key.project_id) if key and key.project_id else None
        return key, project

    def invalidate(self, prefix: str | None = None) -> None:
        """Drop one cached key (or all) now, e.g. after a revocation or a project change here."""
        self._generation += 1
        if prefix is None:
            self._cache.clear()
            self._unknown.clear()
        else:
            self._cache.pop(prefix, None)
            self._unknown.pop(prefix, None)

    async def follow_changes(self) -> None:
        """On the event loop: read the change counter (in a thread) and drop the cache if it moved."""
        version = await asyncio.to_thread(self._control.version)
        if version != self._seen_version:
            if self._seen_version is not None:
                self.invalidate()
            self._seen_version = version

    # last use -----------------------------------------------------------------------------
    def take_last_used(self) -> dict[str, dt.datetime]:
        """On the event loop, where requests record them: the times collected so far, handed
        over whole (none can land in them afterwards); collection starts afresh."""
        pending, self._last_used = self._last_used, {}
        return pending

    def restore_last_used(self, pending: dict[str, dt.datetime]) -> None:
        """On the event loop: times whose write failed, for the next write (newer ones win)."""
        for prefix, used_at in pending.items():
            self._last_used.setdefault(prefix, used_at)

    def write_last_used(self, pending: dict[str, dt.datetime]) -> None:
        """Blocking: write taken times (in a thread)."""
        self._control.touch_keys(pending)

    def flush_last_used(self) -> None:
        """Blocking take-and-write, for when no request is recording (shutdown, tests, scripts);
        the server's periodic flush is `Services.record_counters`, which takes on the loop."""
        self.write_last_used(self.take_last_used())


def require_kind(principal: Principal, allowed: frozenset[str], code: str = "insufficient_scope") -> None:
    if principal.key.kind not in allowed:
        raise ApiError(code)


def require_origin(principal: Principal, origin: str | None) -> None:
    """Browser keys must come from an allowed origin; server and read keys ignore Origin."""
    if principal.key.kind == "pk":
        allowed = principal.project.allowed_origins if principal.project else ()
        if not origin_allowed(origin, allowed):
            raise ApiError("origin_not_allowed")
