"""The one place that turns settings into an event store: the backend is chosen here."""

from __future__ import annotations

from typing import Protocol

from millimetric.settings import SPOOL_DIR, Settings
from millimetric.store.interface import EventStore, StoreError


class SharedStore(Protocol):
    """An event store that several server processes share (`serve --workers N`): started by
    their supervisor, which hands `handle` to each worker (`open_event_store(shared=...)`)."""

    @property
    def handle(self) -> object: ...

    def is_alive(self) -> bool: ...

    def close(self) -> None: ...


class _SharedDuckDB:
    def __init__(self, settings: Settings) -> None:
        from millimetric.store.duckdb.supervisor import StoreProcess

        self._process = StoreProcess(settings.event_store_path)

    @property
    def handle(self) -> object:
        return self._process.address

    def is_alive(self) -> bool:
        return self._process.is_alive()

    def close(self) -> None:
        self._process.close()


class _NothingShared:
    """With ClickHouse, each server process has its own spool and connections: nothing to share."""

    @property
    def handle(self) -> object:
        return None

    def is_alive(self) -> bool:
        return True

    def close(self) -> None:
        pass


def _open_clickhouse(settings: Settings) -> EventStore:
    from millimetric.store.clickhouse.store import ClickHouseEventStore

    assert settings.clickhouse_url
    return ClickHouseEventStore(
        settings.clickhouse_url,
        settings.data_dir / SPOOL_DIR,
        settings.spool_max_bytes,
        redis_url=settings.redis_url,
        redis_prefix=settings.redis_prefix,
    )


def open_event_store(settings: Settings, shared: object | None = None, attach: bool = False) -> EventStore:
    """The event store the settings name, ready for use.

    `shared`: a `SharedStore.handle` from this server's supervisor. `attach`: use the store of a
    server already running on this data directory if there is one (CLI commands hand it their
    rows while it serves), else start one.
    """
    if settings.clickhouse_url:
        return _open_clickhouse(settings)
    from millimetric.store.duckdb import wire
    from millimetric.store.duckdb.client import DuckDBEventStore

    if shared is not None:
        assert isinstance(shared, wire.Address)
        return DuckDBEventStore(shared)
    if attach:
        address = wire.discover(settings.event_store_path)
        if address is not None:
            store = DuckDBEventStore(address)
            try:
                store.ping()
                return store
            except StoreError:
                store.close()  # stale: the server that wrote it is gone
    return DuckDBEventStore.start(settings.event_store_path)


def start_shared_store(settings: Settings) -> SharedStore:
    if settings.clickhouse_url:
        return _NothingShared()
    return _SharedDuckDB(settings)


def inspect_event_store(settings: Settings) -> dict[str, object]:
    """A read-only report on the configured event store (`millimetric doctor`)."""
    if settings.clickhouse_url:
        from millimetric.store.clickhouse.inspect import inspect as inspect_clickhouse

        return {"backend": "clickhouse", **inspect_clickhouse(settings.clickhouse_url, settings.data_dir / SPOOL_DIR)}
    from millimetric.store.duckdb.inspect import inspect

    return {"backend": "duckdb", **inspect(settings.event_store_path)}
