"""The ClickHouse store's spool on its own: durable while ClickHouse is away, shipped exactly once
even when a batch goes twice (a crash after ClickHouse stored it), refused past its limit."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import threading
import uuid
from pathlib import Path
from typing import Iterator

import pytest
import redis

from millimetric.events.model import EventRow
from millimetric.events.queries import Filters, RowsPlan, StatsPlan, TimeRange
from millimetric.store.clickhouse.store import ClickHouseEventStore
from millimetric.store.interface import StoreError, StoreOverloaded, StoreTimeout

from conftest import NEEDS_REAL_CLICKHOUSE, REAL_CLICKHOUSE_URL

pytestmark = pytest.mark.slow  # a ClickHouse (stand-in) process and shipping waits
UNREACHABLE = "http://127.0.0.1:1/nowhere"
REDIS_URL = "redis://127.0.0.1:6379/0"
EVERYTHING = TimeRange(dt.datetime(2000, 1, 1), dt.datetime(2100, 1, 1))


def events(n: int, start: int = 0) -> list[EventRow]:
    t0 = dt.datetime(2026, 3, 1)
    return [
        EventRow(project_id="p", timestamp=t0 + dt.timedelta(seconds=i), event_name="e", event_id=f"id{i}")
        for i in range(start, start + n)
    ]


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The Redis the nodes share (its de-duplication claims), under a prefix of this test's own."""
    prefix = f"mm-chstore-{uuid.uuid4().hex[:8]}:"
    yield {"redis_url": REDIS_URL, "redis_prefix": prefix}
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)
    client.close()


def count(store: ClickHouseEventStore) -> int:
    plan = StatsPlan(EVERYTHING, Filters(), "count", (), None, "UTC", 10)
    return store.stats("p", plan)[0][-1]


def test_a_node_accepts_while_clickhouse_is_down_and_ships_when_it_is_back(
    tmp_path: Path, clickhouse_database: str, shared: dict[str, str]
) -> None:
    offline = ClickHouseEventStore(UNREACHABLE, tmp_path / "spool", 1 << 20, **shared)
    asyncio.run(offline.append(events(500)))
    with pytest.raises(StoreError, match="ClickHouse at http://127.0.0.1:1/nowhere is unreachable"):
        offline.ping()
    assert offline.status()["unflushed_events"] == 500
    offline.close(stall_seconds=0.5)  # what ClickHouse did not take stays in the spool
    crashed_copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "spool", crashed_copy)

    store = ClickHouseEventStore(clickhouse_database, tmp_path / "spool", 1 << 20)
    assert store.sync(60)
    assert count(store) == 500
    store.close()
    # The copy is the spool as a crash right after ClickHouse stored the batch leaves it: the same
    # batch goes again, with the same token, and ClickHouse keeps one copy.
    again = ClickHouseEventStore(clickhouse_database, crashed_copy, 1 << 20)
    assert again.sync(60) and again.status()["unflushed_events"] == 0
    assert count(again) == 500
    asyncio.run(again.append(events(10, start=500)))  # later batches get tokens of their own
    assert count(again) == 510
    again.close()


def test_the_spool_refuses_past_its_limit(tmp_path: Path, shared: dict[str, str]) -> None:
    store = ClickHouseEventStore(UNREACHABLE, tmp_path / "spool", 20_000, **shared)
    with pytest.raises(StoreOverloaded, match="the spool holds"):
        for n in range(100):
            asyncio.run(store.append(events(50, start=50 * n)))
    assert 0 < store.status()["unflushed_bytes"] <= 20_000
    store.close(stall_seconds=0.1)


def test_without_redis_events_with_an_id_wait_for_clickhouse(tmp_path: Path, clickhouse_database: str) -> None:
    """Alone (no Redis), a node decides duplicates from ids it loads from ClickHouse: until it
    could, events with an id are refused (503), those without are accepted."""
    offline = ClickHouseEventStore(UNREACHABLE, tmp_path / "spool", 1 << 20)
    with pytest.raises(StoreTimeout, match="wait for ClickHouse"):
        asyncio.run(offline.append(events(3)))
    assert asyncio.run(offline.append([EventRow("p", dt.datetime(2026, 3, 1), "e")] * 2)) == []
    assert offline.status()["unflushed_events"] == 2
    offline.close(stall_seconds=0.1)
    store = ClickHouseEventStore(clickhouse_database, tmp_path / "spool", 1 << 20)
    assert asyncio.run(store.append(events(3) + events(2))) == [3, 4]
    assert asyncio.run(store.append(events(4))) == [0, 1, 2]
    assert count(store) == 6
    store.close()


def test_a_failed_spool_write_releases_its_claims(tmp_path: Path, shared: dict[str, str]) -> None:
    """A refused append leaves no claim behind: its retry is stored, not taken for a duplicate."""
    store = ClickHouseEventStore(UNREACHABLE, tmp_path / "spool", 20_000, **shared)
    taken = 0
    with pytest.raises(StoreOverloaded):
        while True:
            asyncio.run(store.append(events(50, start=taken)))
            taken += 50
    refused = events(50, start=taken)
    other = ClickHouseEventStore(UNREACHABLE, tmp_path / "other", 1 << 20, **shared)
    assert asyncio.run(other.append(refused)) == []  # none of them was claimed
    assert asyncio.run(other.append(events(50, start=taken - 50))) == list(range(50))  # accepted before: claimed
    for each in (store, other):
        each.close(stall_seconds=0.1)


def test_each_process_claims_a_spool_of_its_own(tmp_path: Path) -> None:
    first = ClickHouseEventStore(UNREACHABLE, tmp_path / "spool", 1 << 20)
    second = ClickHouseEventStore(UNREACHABLE, tmp_path / "spool", 1 << 20)
    assert first.status()["spool"] != second.status()["spool"]
    assert first.status()["node"] != second.status()["node"]
    for store in (first, second):
        store.close(stall_seconds=0.1)


@pytest.mark.skipif(not REAL_CLICKHOUSE_URL, reason=NEEDS_REAL_CLICKHOUSE)
def test_reads_run_concurrently_with_shipping(tmp_path: Path, clickhouse_database: str) -> None:
    store = ClickHouseEventStore(clickhouse_database, tmp_path / "spool", 1 << 30)
    errors: list[BaseException] = []

    def read() -> None:
        try:
            for _ in range(20):
                store.rows("p", RowsPlan(EVERYTHING, Filters(), 50))
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(4)]
    for reader in readers:
        reader.start()
    for i in range(20):
        asyncio.run(store.append(events(100, start=i * 100)))
    for reader in readers:
        reader.join()
    assert not errors
    assert count(store) == 2000
    store.close()
