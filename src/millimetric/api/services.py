"""Everything a request handler needs, opened once per process by the app's lifespan."""

from __future__ import annotations

import dataclasses
from collections import Counter

from millimetric.api.client import Network, parse_networks
from millimetric.auth.guard import KeyResolver
from millimetric.auth.ratelimit import RateLimiter, create_limiter
from millimetric.ingest import pipeline
from millimetric.ingest.visit import VisitFactory
from millimetric.ingest.writer import Writer
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
        return cls(
            settings=settings,
            control=control,
            events=events,
            writer=Writer(events, settings.queue_limit),
            keys=KeyResolver(control, settings.key_cache_ttl),
            visits=visits,
            forget=ForgetRunner(control, events, visits, settings.forget_tombstone_days),
            trusted_proxies=parse_networks(settings.trusted_proxies),
            limiter=create_limiter(settings.rate_limits, settings.redis_url, settings.redis_prefix),
        )

    def count_dropped(self, project_id: str, reasons: Counter[str]) -> None:
        for reason, n in reasons.items():
            self.dropped[(project_id, reason)] += n

    def flush_counters(self) -> None:
        """Write coalesced bookkeeping (key last-use times, dropped-event counts)."""
        self.keys.flush_last_used()
        pending, self.dropped = self.dropped, Counter()
        self.control.add_dropped(dict(pending))

    def close(self) -> None:
        """After `await writer.close()`, which makes every accepted event durable."""
        self.flush_counters()
        self.events.close()
        self.control.close()
