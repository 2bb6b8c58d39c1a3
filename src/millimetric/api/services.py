"""Everything a request handler needs, opened once per process by the app's lifespan."""

from __future__ import annotations

import dataclasses

from millimetric.api.client import Network, parse_networks
from millimetric.auth.guard import KeyResolver
from millimetric.ingest.writer import Writer
from millimetric.settings import Settings
from millimetric.store.control import ControlPlane
from millimetric.store.duckdb_events import DuckDBEventStore


@dataclasses.dataclass
class Services:
    settings: Settings
    control: ControlPlane
    events: DuckDBEventStore
    writer: Writer
    keys: KeyResolver
    trusted_proxies: tuple[Network, ...]

    @classmethod
    def open(cls, settings: Settings) -> "Services":
        control = ControlPlane(settings.control_plane_url, settings.resolved_pepper())
        control.migrate()
        events = DuckDBEventStore(settings.event_store_path)
        return cls(
            settings=settings,
            control=control,
            events=events,
            writer=Writer(events, settings.queue_limit),
            keys=KeyResolver(control, settings.key_cache_ttl),
            trusted_proxies=parse_networks(settings.trusted_proxies),
        )

    def close(self) -> None:
        """Drain queued events first: nothing accepted is dropped on shutdown."""
        self.writer.close()
        self.keys.flush_last_used()
        self.events.close()
        self.control.close()
