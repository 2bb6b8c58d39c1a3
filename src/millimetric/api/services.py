"""Everything a request handler needs, opened once per process by the app's lifespan."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections import Counter

from millimetric.api.client import Network, parse_networks
from millimetric.auth.guard import KeyResolver
from millimetric.auth.passwords import dummy_hash
from millimetric.auth.ratelimit import InProcessLimiter, RateLimiter, create_limiter
from millimetric.auth.sessions import SessionVerifier
from millimetric.ingest import pipeline
from millimetric.ingest.visit import VisitFactory
from millimetric.ingest.writer import Writer
from millimetric.operations import metrics
from millimetric.privacy.forget import ForgetRunner
from millimetric.settings import Settings
from millimetric.store.control import ControlPlane
from millimetric.store.factory import open_event_store
from millimetric.store.interface import EventStore


@dataclasses.dataclass
class Services:
    settings: Settings
    control: ControlPlane
    events: EventStore
    writer: Writer
    keys: KeyResolver
    visits: VisitFactory
    forget: ForgetRunner
    trusted_proxies: tuple[Network, ...]
    limiter: RateLimiter | None
    sessions: SessionVerifier
    login_limiter: RateLimiter  # sign-in attempts are limited even when rate limits are off
    dropped: Counter[tuple[str, str]] = dataclasses.field(default_factory=Counter)

    @property
    def steps(self) -> tuple[pipeline.Step, ...]:
        return pipeline.STEPS if self.settings.enrich else pipeline.REQUIRED_STEPS

    @classmethod
    def open(cls, settings: Settings, shared_store: object | None = None, attach: bool = False) -> "Services":
        """`shared_store`: a worker's handle on the event store its supervisor started. `attach`: use
        the event store of a server running on the same data directory, if any (else start one)."""
        control = ControlPlane(settings.control_plane_url, settings.resolved_pepper())
        control.migrate()
        events = open_event_store(settings, shared=shared_store, attach=attach)
        visits = VisitFactory(control)
        limiter = create_limiter(settings.rate_limits, settings.redis_url, settings.redis_prefix)
        dummy_hash()
        login_limiter = limiter or create_limiter(True, settings.redis_url, settings.redis_prefix) or InProcessLimiter()
        return cls(
            settings=settings,
            control=control,
            events=events,
            writer=Writer(events, settings.queue_limit),
            keys=KeyResolver(control, settings.key_cache_ttl),
            visits=visits,
            forget=ForgetRunner(control, events, visits, settings.forget_tombstone_days),
            trusted_proxies=parse_networks(settings.trusted_proxies),
            limiter=limiter,
            sessions=SessionVerifier(settings.resolved_jwt_secret(), settings.jwks_url),
            login_limiter=login_limiter,
        )

    def count_dropped(self, project_id: str, reasons: Counter[str]) -> None:
        metrics.count_dropped(reasons)
        for reason, n in reasons.items():
            self.dropped[(project_id, reason)] += n

    async def record_counters(self) -> None:
        """The periodic write of coalesced bookkeeping (key last-use times, dropped-event counts).

        Requests update them on the event loop, so they are taken here, on the loop, in one go
        (nothing can land in what was taken); only the database write runs in a thread. A failed
        write puts them back for the next one. Cancelled (shutdown), it still lets the write end,
        so that `close` writes what is left, not a second copy."""
        last_used, dropped = self.keys.take_last_used(), self._take_dropped()
        if not last_used and not dropped:
            return
        write = asyncio.ensure_future(asyncio.to_thread(self._write_counters, last_used, dropped))
        try:
            await asyncio.shield(write)
        except asyncio.CancelledError:
            await asyncio.wait([write])
            if write.exception() is not None:
                self._restore_counters(last_used, dropped)
            raise
        except Exception:
            self._restore_counters(last_used, dropped)
            raise

    def flush_counters(self) -> None:
        """Blocking take-and-write, for when no request updates the counters (shutdown, tests,
        scripts); while the app serves, `record_counters` does it on the loop."""
        self._write_counters(self.keys.take_last_used(), self._take_dropped())

    def _take_dropped(self) -> Counter[tuple[str, str]]:
        pending, self.dropped = self.dropped, Counter()
        return pending

    def _restore_counters(self, last_used: dict[str, dt.datetime], dropped: Counter[tuple[str, str]]) -> None:
        self.keys.restore_last_used(last_used)
        self.dropped.update(dropped)

    def _write_counters(self, last_used: dict[str, dt.datetime], dropped: Counter[tuple[str, str]]) -> None:
        self.keys.write_last_used(last_used)
        if dropped:
            self.control.add_dropped(dict(dropped))

    def close(self) -> None:
        """After `await writer.close()`, which makes every accepted event durable."""
        self.flush_counters()
        self.events.close()
        self.control.close()
