"""GDPR deletion jobs: queued in the control plane, run in the background, survive restarts."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

from millimetric.ingest.visit import VisitFactory, user_hash
from millimetric.store.control import ControlPlane, utcnow
from millimetric.store.interface import EventStore

log = logging.getLogger("millimetric.forget")
POLL_SECONDS = 5.0


class ForgetRunner:
    def __init__(
        self, control: ControlPlane, events: EventStore, visits: VisitFactory, tombstone_days: int
    ) -> None:
        self._control = control
        self._events = events
        self._visits = visits
        self._tombstone_days = tombstone_days
        self._wake = asyncio.Event()

    async def request(self, project_id: str, user_id: str) -> str:
        """Queue the deletion and tombstone the user id (hashed) so later events are dropped."""
        until = utcnow() + dt.timedelta(days=self._tombstone_days)
        hashed = user_hash(self._control.pepper, project_id, user_id)
        job_id = await asyncio.to_thread(self._control.create_forget_job, project_id, user_id, hashed, until)
        self._visits.tombstone(project_id, user_id)
        self._wake.set()
        return job_id

    async def run_forever(self) -> None:
        """Run every unfinished job, then sleep until woken (or the poll interval passes)."""
        while True:
            for job in await asyncio.to_thread(self._control.unfinished_forget_jobs):
                await asyncio.to_thread(self._run_one, job.id, job.project_id, job.user_id)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)
            except TimeoutError:
                pass

    def _run_one(self, job_id: str, project_id: str, user_id: str) -> None:
        self._control.update_forget_job(job_id, "running")
        try:
            deleted = self._events.delete_user(project_id, user_id)
        except Exception:
            log.exception("forget job %s failed", job_id)
            self._control.update_forget_job(job_id, "failed")
            return
        self._control.update_forget_job(job_id, "done", deleted)
