"""The ClickHouse store's spool on its own: durable while ClickHouse is away, shipped exactly once
even when a batch goes twice (a crash after ClickHouse stored it), refused past its limit."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import threading
from pathlib import Path

import pytest

from millimetric.events.model import EventRow
from millimetric.events.queries import Filters, RowsPlan, StatsPlan, TimeRange
from millimetric.store.clickhouse.store import ClickHouseEventStore
from millimetric.store.interface import StoreError, StoreOverloaded

from conftest import NEEDS_REAL_CLICKHOUSE, REAL_CLICKHOUSE_URL

pytestmark = pytest.mark.slow  # a ClickHouse (stand-in) process and shipping waits
UNREACHABLE = "http://127.0.0.1:1/nowhere"
EVERYTHING = TimeRange(dt.datetime(2000, 1, 1), dt.datetime(2100, 1, 1))


def events(n: int, start: int = 0) -> list[EventRow]:
    t0 = dt.datetime(2026, 3, 1)
    return [
        EventRow(project_id="p", timestamp=t0 + dt.timedelta(seconds=i), event_name="e", event_id=f"id{i}")
        for i in range(start, start + n)
    ]


def count(store: ClickHouseEventStore) -> int:
    plan = StatsPlan(EVERYTHING, Filters(), "count", (), None, "UTC", 10)
    return store.stats("p", plan)[0][-1]


def test_a_node_accepts_while_clickhouse_is_down_and_ships_when_it_is_back(
    tmp_path: Path, clickhouse_database: str
) -> None:
    offline = ClickHouseEventStore(UNREACHABLE, tmp_path / "spool", 1 << 20)
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


def test_the_spool_refuses_past_its_limit(tmp_path: Path) -> None:
    store = ClickHouseEventStore(UNREACHABLE, tmp_path / "spool", 20_000)
    with pytest.raises(StoreOverloaded, match="the spool holds"):
        for _ in range(100):
            asyncio.run(store.append(events(50)))
    assert 0 < store.status()["unflushed_bytes"] <= 20_000
    store.close(stall_seconds=0.1)


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
