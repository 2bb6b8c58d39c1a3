"""De-duplication by event id on ClickHouse: an event whose (project_id, event_id) any node
accepted within the last `DEDUP_WINDOW` is not spooled again.

With Redis (`MILLIMETRIC_REDIS_URL`, which every node shares), each id is claimed there before its
row enters the spool: `SET <prefix>dedup:<project>:<event id> NX EX <window>`, one pipelined round
trip per append. The node whose SET succeeds stores the event; every other node, worker and retry
finds the key and reports a duplicate, so the decision is exact across nodes. If the spool write
then fails (or the claiming round trip broke off half-way), the append's claims are deleted again
(only keys still holding its token), so the client's retry is stored rather than taken for a
duplicate of an event that was never acknowledged; should Redis fail at that very moment too, the
claims stay until they expire and an error is logged.

Redis unreachable or failing: appends holding an event id are refused with `StoreTimeout` (503
`overloaded`, retry later) rather than stored without a decision; events without an id are
accepted as usual. A claim lives in Redis only: Redis must keep its keys (persistence on, no
eviction policy that drops them), and events stored before Redis was configured claim nothing.

Without Redis (one node, one process), the node keeps the index in memory (`SeenIds`), loaded from
ClickHouse (ids inserted within the window, seen at their insert time) and this node's spool the
first time an append holds an id. Until it is loaded, such appends are refused with
`StoreTimeout`: a node that starts while ClickHouse is down accepts events without ids only.
Several worker processes or nodes without Redis each keep their own index: a repeat that reaches
another process is stored again.

Forget and retention deletes release no claim (nor entry of the index): a repeat of a deleted
event within the window is still a duplicate (the embedded store forgets deleted ids only at its
next start).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from typing import Any, Callable, Iterator, Protocol, Sequence

from millimetric.events.model import EventRow
from millimetric.store.dedup import SeenIds
from millimetric.store.interface import DEDUP_WINDOW, StoreError, StoreTimeout
from millimetric.store.journal import Frame
from millimetric.store.rows import decode_rows

log = logging.getLogger("millimetric.store")

REDIS_SECONDS = 2.0
# Deletes the claims (KEYS) that still hold this append's token (ARGV[1]): never another's.
_RELEASE_SCRIPT = """
local released = 0
for _, key in ipairs(KEYS) do
    if redis.call('GET', key) == ARGV[1] then
        released = released + redis.call('DEL', key)
    end
end
return released
"""
_WINDOW_S = int(DEDUP_WINDOW.total_seconds())
# Ids ClickHouse holds from within the window, seen when they were inserted.
_SEED_SQL = f"""SELECT toString(project_id), event_id, toUnixTimestamp64Micro(inserted_at) / 1e6
    FROM events WHERE event_id IS NOT NULL AND inserted_at >= now64(6) - INTERVAL {_WINDOW_S} SECOND"""

Query = Callable[[str, dict], list[tuple]]


class Deduplicator(Protocol):
    def admit(self, rows: Sequence[EventRow]) -> contextlib.AbstractContextManager[list[int]]:
        """Enter with the positions of the duplicate rows (in order); the caller spools the others
        inside the block. Leaving it by an exception undoes the decision for the other rows."""

    def close(self) -> None: ...


def first_sightings(rows: Sequence[EventRow]) -> tuple[list[int], dict[tuple[str, str], int]]:
    """(positions repeating an earlier row of `rows`, position of each (project, id)'s first row)."""
    repeats: list[int] = []
    first: dict[tuple[str, str], int] = {}
    for position, row in enumerate(rows):
        if row.event_id is None:
            continue
        key = (row.project_id, row.event_id)
        if key in first:
            repeats.append(position)
        else:
            first[key] = position
    return repeats, first


class RedisClaims:
    """Claims shared by every node through Redis (thread-safe: redis-py pools its connections)."""

    def __init__(self, url: str, prefix: str, owner: str) -> None:
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=REDIS_SECONDS, socket_connect_timeout=REDIS_SECONDS)
        self._prefix = f"{prefix}dedup:"
        self._owner = owner  # the claim's value: which node's spool holds the event

    @contextlib.contextmanager
    def admit(self, rows: Sequence[EventRow]) -> Iterator[list[int]]:
        repeats, first = first_sightings(rows)
        if not first:
            yield []
            return
        keys = [f"{self._prefix}{project}:{event_id}" for project, event_id in first]
        token = f"{self._owner}:{secrets.token_hex(8)}"  # this append's claims, and only they, are released
        try:
            taken = self._run(lambda pipe: [pipe.set(key, token, nx=True, ex=_WINDOW_S) for key in keys])
        except StoreTimeout:
            self._release(keys, token)  # some SETs may have landed before the connection failed
            raise
        duplicates = sorted(repeats + [position for position, ok in zip(first.values(), taken) if not ok])
        try:
            yield duplicates
        except BaseException:
            self._release([key for key, ok in zip(keys, taken) if ok], token)
            raise

    def _release(self, keys: list[str], token: str) -> None:
        if not keys:
            return
        try:
            self._run(lambda pipe: [pipe.eval(_RELEASE_SCRIPT, len(keys), *keys, token)])
        except StoreTimeout:
            log.error(
                "de-duplication: %d claims stay in Redis after a failed append: retries of them count as duplicates",
                len(keys),
            )

    def _run(self, commands: Callable[[Any], object]) -> list:
        import redis

        try:
            with self._redis.pipeline(transaction=False) as pipe:
                commands(pipe)
                return pipe.execute()
        except redis.RedisError as exc:
            raise StoreTimeout(f"Redis did not answer the de-duplication claims ({type(exc).__name__}: {exc})") from exc

    def close(self) -> None:
        self._redis.close()


class SeenOnThisNode:
    """The index of one process, loaded on first use from ClickHouse (`read`) and the frames this
    node's spool has not shipped yet (`pending`)."""

    def __init__(self, read: Query, pending: Callable[[], list[Frame]], clock: Callable[[], float] = time.time) -> None:
        self._read, self._pending, self._clock = read, pending, clock
        self._seen: SeenIds | None = None
        self._lock = threading.Lock()  # check, spool and remember are one step

    @contextlib.contextmanager
    def admit(self, rows: Sequence[EventRow]) -> Iterator[list[int]]:
        if all(row.event_id is None for row in rows):
            yield []
            return
        projects = [row.project_id for row in rows]
        ids = [row.event_id for row in rows]
        with self._lock:
            seen = self._load()
            duplicates = seen.duplicates(projects, ids)
            yield duplicates
            seen.remember(projects, ids, skip=duplicates)  # only once spooled: a failed write is no sighting

    def close(self) -> None:
        """Nothing to release: the index goes with the process."""

    def _load(self) -> SeenIds:
        if self._seen is not None:
            return self._seen
        seen = SeenIds(self._clock)
        # The spool first: a frame shipped meanwhile is in ClickHouse by the time it is read.
        frames = self._pending()
        if frames:
            table = decode_rows((frame.payload, frame.payload_format) for frame in frames)
            seen.remember(table.column("project_id").to_pylist(), table.column("event_id").to_pylist())
        try:
            seen.load(self._read(_SEED_SQL, {}))
        except StoreError as exc:  # ClickHouse down: no decision is possible yet
            raise StoreTimeout(
                f"events with an event_id wait for ClickHouse: the de-duplication index loads from it ({exc})"
            ) from exc
        log.info("de-duplication: %d event ids seen within the window", len(seen))
        self._seen = seen
        return seen
