"""Numbered migrations of the ClickHouse event store, applied by the server that finds them missing.

`millimetric_format` holds one row per applied migration. ClickHouse has no DDL transactions, so
each step is idempotent (`IF NOT EXISTS`): a server that died half-way through one runs it again.
A database whose newest migration is newer than this build knows is refused with a message.

Choices, measured on the bench data (`bench/ingest.py --clickhouse`):
- Timestamps keep microseconds (DateTime64(6)), as the embedded store does: raw rows return them,
  cursors page on them and a derived session id floors them, so the same events give the same
  answers on both backends only at the same precision.
- The small vocabularies (project, event name, source, medium, country, device, browser, os,
  classifier confidence and rule) are LowCardinality: dictionary-coded, a byte or two per row.
- Sorted by (project_id, timestamp): every read is one project over a time range; partitions by
  month make retention drop whole parts.
- A session id the client did not send is not stored: `session_id` is an ALIAS that derives it
  (`{anonymous_id}-{floor(unix_us / 1800000000)}`), like the embedded store's virtual column.
- `node` and `seq` say which node's spool shipped the row and where in it: the tie-break of raw
  row order, and with `inserted_at` (the server's clock at insert) the snapshot bound of a
  paging walk; there is no global sequence.
- Inserts carry a deduplication token (node id + sequence range); a non-replicated MergeTree
  keeps the tokens of its last `DEDUP_WINDOW` inserts.
"""

from __future__ import annotations

from typing import Callable

from millimetric.store.interface import StoreError

DEDUP_WINDOW = 10_000
DERIVED_SESSION_SQL = "concat(anonymous_id, '-', toString(intDiv(toUnixTimestamp64Micro(timestamp), 1800000000)))"
_STRING = "String CODEC(ZSTD(3))"
_NULLABLE = "Nullable(String) CODEC(ZSTD(3))"
_SMALL = "LowCardinality(String)"
EVENTS_DDL = f"""
CREATE TABLE IF NOT EXISTS events (
    project_id {_SMALL},
    timestamp DateTime64(6, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    event_name {_SMALL},
    event_id {_NULLABLE},
    anonymous_id {_STRING},
    user_id {_NULLABLE},
    session_sent {_NULLABLE},
    source {_SMALL},
    medium {_SMALL},
    campaign LowCardinality(Nullable(String)),
    source_confidence {_SMALL},
    source_rule_id {_SMALL},
    referrer {_NULLABLE},
    url {_NULLABLE},
    path {_NULLABLE},
    country {_SMALL},
    device_type {_SMALL},
    browser {_SMALL},
    os {_SMALL},
    ip_hash {_STRING},
    properties {_STRING},
    node {_SMALL},
    seq UInt64 CODEC(Delta, ZSTD(1)),
    inserted_at DateTime64(6, 'UTC') DEFAULT now64(6) CODEC(Delta, ZSTD(1)),
    session_id String ALIAS coalesce(session_sent, {DERIVED_SESSION_SQL})
) ENGINE = MergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (project_id, timestamp)
SETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW}
"""
# /v1/sources over whole UTC days: events and visitor sets per (project, day, source, medium),
# kept by ClickHouse at every insert. Deletes rebuild the days they touch (`store.delete_*`).
SOURCE_DAYS_DDL = """
CREATE TABLE IF NOT EXISTS source_days (
    project_id LowCardinality(String),
    day Date,
    source LowCardinality(String),
    medium LowCardinality(String),
    events SimpleAggregateFunction(sum, UInt64),
    visitors AggregateFunction(uniqExact, String)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (project_id, day, source, medium)
"""
SOURCE_DAYS_SELECT = """SELECT project_id, toDate(timestamp) AS day, source, medium,
    count() AS events, uniqExactState(anonymous_id) AS visitors
    FROM events"""
SOURCE_DAYS_VIEW_DDL = f"""
CREATE MATERIALIZED VIEW IF NOT EXISTS source_days_view TO source_days AS
{SOURCE_DAYS_SELECT} GROUP BY project_id, day, source, medium
"""

Execute = Callable[[str], object]


def _0001_events(execute: Execute) -> None:
    execute(EVENTS_DDL)


def _0002_source_days(execute: Execute) -> None:
    execute(SOURCE_DAYS_DDL)
    execute(SOURCE_DAYS_VIEW_DDL)
    # Events stored before the view existed (none, unless a server died between the two steps).
    execute("TRUNCATE TABLE source_days")
    execute(f"INSERT INTO source_days {SOURCE_DAYS_SELECT} GROUP BY project_id, day, source, medium")


MIGRATIONS: tuple[Callable[[Execute], None], ...] = (_0001_events, _0002_source_days)
VERSION = len(MIGRATIONS)
FORMAT_DDL = """CREATE TABLE IF NOT EXISTS millimetric_format (
    version UInt32, applied_at DateTime DEFAULT now()
) ENGINE = MergeTree ORDER BY version"""


def migrate(execute: Execute, found: int, where: str) -> None:
    """Apply the migrations after `found` (the newest applied, from `millimetric_format`)."""
    if found > VERSION:
        raise StoreError(
            f"ClickHouse database {where} holds event store format {found}, newer than this build knows "
            f"({VERSION}): it was written by a newer millimetric. Run that version."
        )
    for number in range(found, VERSION):
        MIGRATIONS[number](execute)
        execute(f"INSERT INTO millimetric_format (version) VALUES ({number + 1})")
