"""What the server knows about the request an event arrived with (never stored as such).

`VisitFactory` gathers the per-request inputs the pipeline steps need (today's salt, the project's
bot setting, its tombstones) so that each step stays a small pure-ish function of (row, visit).
Everything it reads from the control plane is read ahead, in threads (`prepare_salts`,
`refresh_tombstones`), so that building a visit on the event loop does no database I/O.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
from typing import TYPE_CHECKING, Callable, NamedTuple

from millimetric.store.control import ControlPlane, Project

if TYPE_CHECKING:
    from millimetric.ingest.schemas import Context

# How often each process re-reads the tombstones other processes wrote (the forget runner waits
# this long, plus a margin, before it deletes, so that no process still accepts the user's events).
TOMBSTONE_REFRESH_SECONDS = 5.0
# How often each process makes sure the salts of today and tomorrow are in memory: tomorrow's
# exists long before midnight, so the first request of a day finds it there.
SALT_PREPARE_SECONDS = 600.0


class Visit(NamedTuple):
    project_id: str
    received_at: dt.datetime  # naive UTC
    ip: str
    user_agent: str
    request_host: str
    proxy_country: str = ""  # CF-IPCountry, only when MILLIMETRIC_TRUST_CF_HEADERS is set
    salt: bytes = b""
    keep_bots: bool = False
    is_forgotten: Callable[[str], bool] = lambda _user_id: False

    def with_context(self, context: "Context | None") -> "Visit":
        """The visitor a trusted server-side sender forwards in `context` (ip, user_agent)."""
        if context is None:
            return self
        return self._replace(
            ip=context.ip or self.ip,
            user_agent=context.user_agent if context.user_agent is not None else self.user_agent,
        )


def user_hash(pepper: str, project_id: str, user_id: str) -> str:
    """What a tombstone keeps instead of the user id."""
    return hmac.new(pepper.encode(), f"{project_id}\x00{user_id}".encode(), hashlib.sha256).hexdigest()


def _utc_day(now: dt.datetime) -> dt.date:
    return now.astimezone(dt.timezone.utc).date()


class VisitFactory:
    """Builds visits. On the event loop use `visit_async`; `visit` is for threads and scripts.

    The salts of today and tomorrow (UTC) are kept in memory by `prepare_salts`, a chore run in a
    thread (once at construction, then every `SALT_PREPARE_SECONDS`), so the salt of a new day is
    already there at midnight. A day it did not prepare (the clock jumped) is fetched in a thread.
    """

    def __init__(
        self,
        control: ControlPlane,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc),
    ) -> None:
        self._control = control
        self._clock = clock
        self._salts: dict[dt.date, bytes] = {}  # replaced whole, never changed in place
        self._tombstones: set[tuple[str, str]] = set()
        self.refresh_tombstones()
        self.prepare_salts()

    async def visit_async(
        self, project: Project, ip: str, user_agent: str, request_host: str, proxy_country: str = ""
    ) -> Visit:
        """The visit of a request, for the event loop: no database I/O on it."""
        now = self._clock()
        day = _utc_day(now)
        salt = self._salts.get(day)
        if salt is None:  # not prepared (the clock jumped, or the chore keeps failing)
            salt = await asyncio.to_thread(self._fetch_salt, day)
        return self._visit(project, now, salt, ip, user_agent, request_host, proxy_country)

    def visit(self, project: Project, ip: str, user_agent: str, request_host: str, proxy_country: str = "") -> Visit:
        """Blocking (it reads the control plane when the day's salt is not in memory): call it
        off the event loop; handlers use `visit_async`."""
        now = self._clock()
        day = _utc_day(now)
        salt = self._salts.get(day)
        if salt is None:
            salt = self._fetch_salt(day)
        return self._visit(project, now, salt, ip, user_agent, request_host, proxy_country)

    def _visit(
        self,
        project: Project,
        now: dt.datetime,
        salt: bytes,
        ip: str,
        user_agent: str,
        request_host: str,
        proxy_country: str,
    ) -> Visit:
        pepper, project_id = self._control.pepper, project.id
        tombstones = self._tombstones

        def is_forgotten(user_id: str) -> bool:
            return bool(tombstones) and (project_id, user_hash(pepper, project_id, user_id)) in tombstones

        return Visit(
            project_id=project_id,
            received_at=now.astimezone(dt.timezone.utc).replace(tzinfo=None),
            ip=ip,
            user_agent=user_agent,
            request_host=request_host,
            proxy_country=proxy_country,
            salt=salt,
            keep_bots=project.keep_bots,
            is_forgotten=is_forgotten,
        )

    def tombstone(self, project_id: str, user_id: str) -> None:
        """Apply a new tombstone in this process at once (others read it within seconds)."""
        self._tombstones.add((project_id, user_hash(self._control.pepper, project_id, user_id)))

    def prepare_salts(self) -> None:
        """Blocking: put the salts of today and tomorrow in memory (creating them if need be) and
        forget older ones. Run in a thread, periodically. Asking for tomorrow's salt deletes every
        salt before today's (`ControlPlane.salt_for_day`): a salt is created early on the day before
        its day and deleted early on the day after, so none lives much beyond 48 hours."""
        today = _utc_day(self._clock())
        self._salts = {day: salt for day, salt in self._salts.items() if day >= today}
        tomorrow = today + dt.timedelta(days=1)
        self._salts = {today: self._control.salt_for_day(today), tomorrow: self._control.salt_for_day(tomorrow)}

    def _fetch_salt(self, day: dt.date) -> bytes:
        """Blocking: a salt `prepare_salts` did not prepare, kept beside the prepared ones."""
        salt = self._control.salt_for_day(day)
        self._salts = {**{d: s for d, s in self._salts.items() if d >= day}, day: salt}
        return salt

    def refresh_tombstones(self) -> None:
        """Re-read tombstones written by other processes (the server does it every few seconds,
        off the event loop); expired ones are deleted on the way."""
        self._tombstones = self._control.live_tombstones(self._clock())
