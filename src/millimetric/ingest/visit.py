"""What the server knows about the request an event arrived with (never stored as such).

`VisitFactory` gathers the per-request inputs the pipeline steps need (today's salt, the project's
bot setting, its tombstones) so that each step stays a small pure-ish function of (row, visit).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from typing import TYPE_CHECKING, Callable, NamedTuple

from millimetric.store.control import ControlPlane, Project

if TYPE_CHECKING:
    from millimetric.ingest.schemas import Context


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


class VisitFactory:
    def __init__(
        self,
        control: ControlPlane,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc),
    ) -> None:
        self._control = control
        self._clock = clock
        self._salt_day: dt.date | None = None
        self._salt = b""
        self._tombstones: set[tuple[str, str]] = set()
        self.refresh_tombstones()

    def visit(
        self, project: Project, ip: str, user_agent: str, request_host: str, proxy_country: str = ""
    ) -> Visit:
        now = self._clock()
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
            salt=self._salt_of(now.astimezone(dt.timezone.utc).date()),
            keep_bots=project.keep_bots,
            is_forgotten=is_forgotten,
        )

    def tombstone(self, project_id: str, user_id: str) -> None:
        """Apply a new tombstone in this process at once (others read it within seconds)."""
        self._tombstones.add((project_id, user_hash(self._control.pepper, project_id, user_id)))

    def _salt_of(self, day: dt.date) -> bytes:
        if day != self._salt_day:
            self._salt, self._salt_day = self._control.salt_for_day(day), day
        return self._salt

    def refresh_tombstones(self) -> None:
        """Re-read tombstones written by other processes (the server does it every few seconds,
        off the event loop); expired ones are deleted on the way."""
        self._tombstones = self._control.live_tombstones(self._clock())
