"""GDPR deletion jobs: queued in the control plane, run in the background, survive restarts.

A job's delete waits until every server process has seen the user's tombstone: processes re-read
tombstones every `refresh_seconds` (their own process applies it at once), so an event of the user
can still be accepted elsewhere for that long after the request. The delete runs no earlier than
`created_at + refresh_seconds + margin_seconds`; by then every such event has been acknowledged
(durable), and the store's delete covers every event acknowledged before it starts.

A failed attempt is retried, without limit, after `retry_base_seconds` doubled at each further
failure up to `retry_max_seconds` (5 s, 10 s, 20 s, ... 10 min): a deletion the law requires is
never given up; `GET /v1/forget/{job_id}` shows `failed` with the attempts made and the last error
meanwhile. A job found `running` (the server died during it) is run again: deletion is idempotent.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import logging
from typing import Callable, TypeVar

from millimetric.ingest.visit import TOMBSTONE_REFRESH_SECONDS, VisitFactory, user_hash
from millimetric.store.control import ControlPlane, ForgetJob, utcnow
from millimetric.store.interface import EventStore

log = logging.getLogger("millimetric.forget")
POLL_SECONDS = 5.0
MARGIN_SECONDS = 2.0  # beyond the tombstone refresh: a refresh's own read, and the write of what it let in
RETRY_BASE_SECONDS = 5.0
RETRY_MAX_SECONDS = 600.0
LAST_ERROR_CHARS = 200
T = TypeVar("T")
EVERYTHING_BEFORE = dt.datetime(9999, 1, 1)  # a cutoff later than any stored event (naive UTC)


def backoff(failures: int, base: float, cap: float) -> float:
    """Seconds to wait after the `failures`-th failure in a row: base, 2 base, 4 base, ... cap."""
    return min(cap, base * 2 ** min(max(failures - 1, 0), 30))


def describe_error(exc: BaseException, user_id: str) -> str:
    """A short message for `last_error`, with every spelling of the user id taken out."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if user_id:
        spellings = {user_id, user_id.replace("'", "''"), json.dumps(user_id)[1:-1], repr(user_id)[1:-1]}
        for spelling in sorted(spellings, key=len, reverse=True):
            if spelling:
                text = text.replace(spelling, "<user_id>")
    return text[:LAST_ERROR_CHARS]


async def _to_thread_to_the_end(work: Callable[[], T]) -> T:
    """`asyncio.to_thread`, except that a cancellation (shutdown) waits for the thread to end, so
    that the stores are not closed under a running delete (and the job's state is written)."""
    running = asyncio.ensure_future(asyncio.to_thread(work))
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        await asyncio.wait([running])
        raise


class ForgetRunner:
    """Runs forget jobs one at a time (in the one process that runs chores).

    `refresh_seconds`: how often every process re-reads tombstones; with `margin_seconds`, how long
    a job waits before its delete. `poll_seconds`: how often the queue is read when nothing wakes
    the runner (jobs queued by another process, the CLI). `retry_base_seconds`/`retry_max_seconds`:
    the backoff of a failed job, and of the runner itself when the control plane fails.
    """

    def __init__(
        self,
        control: ControlPlane,
        events: EventStore,
        visits: VisitFactory,
        tombstone_days: int,
        *,
        refresh_seconds: float = TOMBSTONE_REFRESH_SECONDS,
        margin_seconds: float = MARGIN_SECONDS,
        poll_seconds: float = POLL_SECONDS,
        retry_base_seconds: float = RETRY_BASE_SECONDS,
        retry_max_seconds: float = RETRY_MAX_SECONDS,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self._control = control
        self._events = events
        self._visits = visits
        self._tombstone_days = tombstone_days
        self._hold = dt.timedelta(seconds=refresh_seconds + margin_seconds)
        self._poll_seconds = poll_seconds
        self._retry_base = retry_base_seconds
        self._retry_max = retry_max_seconds
        self._clock = clock
        self._wake = asyncio.Event()

    async def request(self, project_id: str, user_id: str) -> str:
        """Queue the deletion and tombstone the user id (hashed) so later events are dropped."""
        until = utcnow() + dt.timedelta(days=self._tombstone_days)
        hashed = user_hash(self._control.pepper, project_id, user_id)
        job_id = await asyncio.to_thread(self._control.create_forget_job, project_id, user_id, hashed, until)
        self._visits.tombstone(project_id, user_id)
        self._wake.set()
        return job_id

    def wake(self) -> None:
        """A job was queued here by other means (a project deletion): look at the queue now."""
        self._wake.set()

    def due_at(self, job: ForgetJob) -> dt.datetime:
        """When the job may run: once every process has its tombstone, and its retry time if any."""
        due = job.created_at + self._hold
        if job.status == "failed" and job.next_attempt_at is not None:
            due = max(due, job.next_attempt_at)
        return due

    async def run_forever(self) -> None:
        """Run every job that is due; sleep until the next one is due, a request wakes the runner,
        or the poll interval passes. A failure (the control plane is down) is logged and retried
        with backoff; it never ends the loop."""
        failures = 0
        while True:
            self._wake.clear()  # before reading the queue: a job queued meanwhile wakes the next wait
            try:
                next_due = await self._run_due_jobs()
                failures = 0
                wait = self._poll_seconds
                if next_due is not None:
                    wait = min(wait, max((next_due - self._clock()).total_seconds(), 0.0))
            except Exception:
                failures += 1
                wait = backoff(failures, self._retry_base, self._retry_max)
                log.exception("forget jobs: could not run them; trying again in %.1f s", wait)
            if wait > 0:
                try:
                    await asyncio.wait_for(self._wake.wait(), wait)
                except TimeoutError:
                    pass

    async def _run_due_jobs(self) -> dt.datetime | None:
        """Run the jobs due now, oldest first; returns when the next one is due, if any."""
        next_due: dt.datetime | None = None
        for job in await _to_thread_to_the_end(self._control.unfinished_forget_jobs):
            due = self.due_at(job)
            if due > self._clock():
                next_due = due if next_due is None else min(next_due, due)
                continue
            retry_at = await _to_thread_to_the_end(functools.partial(self._run_one, job))
            if retry_at is not None:
                next_due = retry_at if next_due is None else min(next_due, retry_at)
        return next_due

    def _run_one(self, job: ForgetJob) -> dt.datetime | None:
        """Blocking: one attempt. Returns when to try again if it failed. Control-plane errors
        propagate (the job is retried from where it stands)."""
        self._control.start_forget_attempt(job.id)
        attempt = job.attempts + 1
        try:
            if job.kind == "project":  # a deleted project: every event it has
                deleted = self._events.delete_before(job.project_id, EVERYTHING_BEFORE)
            else:
                assert job.user_id is not None  # cleared only when done
                deleted = self._events.delete_user(job.project_id, job.user_id)
        except Exception as exc:
            error = describe_error(exc, job.user_id or "")
            retry_at = self._clock() + dt.timedelta(seconds=backoff(attempt, self._retry_base, self._retry_max))
            log.warning(
                "forget job %s: attempt %d failed (%s); trying again at %s",
                job.id,
                attempt,
                error,
                retry_at.isoformat(timespec="seconds"),
            )
            self._control.fail_forget_attempt(job.id, error, retry_at)
            return retry_at
        self._control.finish_forget_job(job.id, deleted)
        return None
