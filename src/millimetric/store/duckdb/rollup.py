"""Visitors per traffic source, pre-aggregated: what keeps /v1/sources over months exact and fast.

Exact distinct visitors per (source, medium) over 12 months of 10M events is a hash aggregate over
2.45M (source, medium, visitor) entries: about a second on the bench machine. The rollup keeps,
per project,
- `source_medium_visitors`: one row per (source, medium, visitor), and `source_visitors` one per
  (source, visitor), holding the UTC days that visitor came that way (visitors are numbered in
  `rollup_visitors`, ways in in `rollup_ways`);
- `source_days`: events per (UTC day, source, medium).
A read takes whole days of its range from the rollup and everything else (the partial days at the
range's ends, and events newer than the rollup) from the events table, so answers stay exact.

`rollup_state.covered_seq` says which events the rollup holds: exactly those with seq <= it. The
store process folds newer events in from time to time (`fold`); deleting events (forget,
retention) rebuilds the rows they touched (`delete_events`) in the same transaction.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import duckdb

# Visitors and ways in (source and medium) are numbered: the rollup repeats each visitor per way in,
# and integers are smaller than names and ids and faster to group and join on. A way with medium
# NULL is the source as a whole.
_TABLES = {
    "rollup_visitors": "project_id VARCHAR, anonymous_id VARCHAR, vid BIGINT",
    "rollup_ways": "way INTEGER, source VARCHAR, medium VARCHAR",
    "source_medium_visitors": "project_id VARCHAR, way INTEGER, vid BIGINT, first_day DATE, last_day DATE, days DATE[]",
    "source_visitors": "project_id VARCHAR, way INTEGER, vid BIGINT, first_day DATE, last_day DATE, days DATE[]",
    "source_days": "project_id VARCHAR, day DATE, source VARCHAR, medium VARCHAR, events BIGINT",
    "rollup_state": "covered_seq BIGINT NOT NULL, layout INTEGER NOT NULL",
}
# Raised when the tables above change. The rollup is derived data: a store that finds another
# layout drops it, and the next fold rebuilds it from the events.
LAYOUT = 2
# /v1/sources breakdown -> (its visitor table, the ways it counts: how an event `e` finds its way `w`)
BREAKDOWN_TABLES = {
    "source_medium": ("source_medium_visitors", "w.source = e.source AND w.medium = e.medium"),
    "source": ("source_visitors", "w.source = e.source AND w.medium IS NULL"),
}
_SAME_DAY = "t.project_id = n.project_id AND t.day = n.day AND t.source = n.source AND t.medium = n.medium"


def open_rollup(cur: duckdb.DuckDBPyConnection) -> None:
    """Create the rollup's tables, or rebuild them empty when they have another layout."""
    found = cur.execute(
        "SELECT 1 FROM duckdb_columns() WHERE table_name = 'rollup_state' AND column_name = 'layout'"
    ).fetchall()
    if not found or cur.execute("SELECT layout FROM rollup_state").fetchall() != [(LAYOUT,)]:
        for table in _TABLES:
            cur.execute(f"DROP TABLE IF EXISTS {table}")
    for table, columns in _TABLES.items():
        cur.execute(f"CREATE TABLE IF NOT EXISTS {table} ({columns})")
    cur.execute(f"INSERT INTO rollup_state SELECT 0, {LAYOUT:d} WHERE NOT EXISTS (SELECT 1 FROM rollup_state)")


def _visitor_rows(relation: str, way: str) -> str:
    """Rows of a visitor table from `relation` (project_id, source, medium, vid, day).

    `list_sort(list_distinct(list(day)))`: an ordered DISTINCT aggregate costs several times more."""
    return f"""
        SELECT e.project_id, w.way, e.vid, min(e.day) AS first_day, max(e.day) AS last_day,
               list_sort(list_distinct(list(e.day))) AS days
        FROM {relation} AS e
        JOIN rollup_ways AS w ON {way}
        GROUP BY e.project_id, w.way, e.vid"""


def _with_vids(relation: str) -> str:
    """`relation`'s rows with their visitors' numbers instead of their anonymous_ids."""
    return f"""SELECT e.project_id, e.source, e.medium, v.vid, e.day FROM {relation} AS e
        JOIN rollup_visitors AS v ON v.project_id = e.project_id AND v.anonymous_id = e.anonymous_id"""


@contextlib.contextmanager
def transaction(cur: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """One transaction on `cur`: committed when the block ends, rolled back if it raises."""
    cur.execute("BEGIN TRANSACTION")
    try:
        yield
    except BaseException:
        cur.execute("ROLLBACK")
        raise
    cur.execute("COMMIT")


def covered_seq(cur: duckdb.DuckDBPyConnection) -> int:
    # fetchall: a result left open keeps its transaction open, and that stops automatic checkpoints
    return cur.execute("SELECT covered_seq FROM rollup_state").fetchall()[0][0]


def _number_visitors(cur: duckdb.DuckDBPyConnection, relation: str) -> None:
    """Give the anonymous_ids of `relation` that have no number yet the next free ones."""
    cur.execute(f"""INSERT INTO rollup_visitors
        SELECT project_id, anonymous_id, (SELECT coalesce(max(vid), 0) FROM rollup_visitors) + row_number() OVER ()
        FROM (SELECT DISTINCT project_id, anonymous_id FROM {relation}) AS n
        WHERE NOT EXISTS (
            SELECT 1 FROM rollup_visitors AS v WHERE v.project_id = n.project_id AND v.anonymous_id = n.anonymous_id
        )""")


def _number_ways(cur: duckdb.DuckDBPyConnection, relation: str) -> None:
    """Number the (source, medium) pairs and sources of `relation` not seen before."""
    cur.execute(f"""INSERT INTO rollup_ways
        SELECT (SELECT coalesce(max(way), 0) FROM rollup_ways) + row_number() OVER (), source, medium
        FROM (SELECT DISTINCT source, medium FROM {relation} UNION SELECT DISTINCT source, NULL FROM {relation}) AS n
        WHERE NOT EXISTS (
            SELECT 1 FROM rollup_ways AS w WHERE w.source = n.source AND w.medium IS NOT DISTINCT FROM n.medium
        )""")


def fold(cur: duckdb.DuckDBPyConnection) -> int:
    """Fold events newer than the rollup into it, in one transaction; returns how many."""
    with transaction(cur):
        covered = covered_seq(cur)
        upto = cur.execute("SELECT coalesce(max(seq), 0) FROM events").fetchall()[0][0]
        if upto <= covered:
            return 0
        # One row per visitor, way in and day: real traffic repeats these many times over.
        cur.execute(
            """CREATE OR REPLACE TEMP TABLE fresh AS
            SELECT project_id, source, medium, anonymous_id, "timestamp"::DATE AS day, count(*) AS events
            FROM events WHERE seq > $covered AND seq <= $upto GROUP BY ALL""",
            {"covered": covered, "upto": upto},
        )
        _number_visitors(cur, "fresh")
        _number_ways(cur, "fresh")
        cur.execute(f"""MERGE INTO source_days AS t
            USING (SELECT project_id, day, source, medium, sum(events) AS events FROM fresh GROUP BY ALL) AS n
            ON {_SAME_DAY}
            WHEN MATCHED THEN UPDATE SET events = t.events + n.events
            WHEN NOT MATCHED THEN INSERT VALUES (n.project_id, n.day, n.source, n.medium, n.events)""")
        cur.execute(f"CREATE OR REPLACE TEMP TABLE fresh_visits AS {_with_vids('fresh')}")
        for table, way in BREAKDOWN_TABLES.values():
            _merge_visitor_rows(cur, table, _visitor_rows("fresh_visits", way))
        cur.execute("UPDATE rollup_state SET covered_seq = $upto", {"upto": upto})
        cur.execute("DROP TABLE fresh")
        cur.execute("DROP TABLE fresh_visits")
        return upto - covered


def _merge_visitor_rows(cur: duckdb.DuckDBPyConnection, table: str, rows: str) -> None:
    """Widen the rows `table` has for these visitors and ways in, and add the others. An UPDATE
    and an anti-joined INSERT: a MERGE cost three times more CPU for the same 250k new visitors."""
    cur.execute(f"CREATE OR REPLACE TEMP TABLE visitor_rows AS {rows}")
    same = "t.project_id = n.project_id AND t.way = n.way AND t.vid = n.vid"
    cur.execute(f"""UPDATE {table} AS t SET first_day = least(t.first_day, n.first_day),
            last_day = greatest(t.last_day, n.last_day),
            days = list_sort(list_distinct(list_concat(t.days, n.days)))
        FROM visitor_rows AS n WHERE {same}""")
    cur.execute(f"INSERT INTO {table} BY NAME SELECT n.* FROM visitor_rows AS n ANTI JOIN {table} AS t ON {same}")
    cur.execute("DROP TABLE visitor_rows")


def delete_events(cur: duckdb.DuckDBPyConnection, condition: str, params: dict) -> int:
    """DELETE FROM events WHERE `condition`, and rebuild the rollup rows of the visitors and days
    it touched from the events left. Run inside the caller's transaction; returns rows deleted.

    A touched visitor loses its number, so an anonymous_id with no events left is gone from the
    rollup too (forget means forget); one with events left gets a new number."""
    covered = covered_seq(cur)
    cur.execute(
        f"""CREATE OR REPLACE TEMP TABLE gone AS
        SELECT DISTINCT project_id, anonymous_id, "timestamp"::DATE AS day FROM events
        WHERE ({condition}) AND seq <= {covered:d}""",
        params,
    )
    deleted = cur.execute(f"DELETE FROM events WHERE {condition}", params).fetchall()[0][0]
    cur.execute("""CREATE OR REPLACE TEMP TABLE gone_visitors AS
        SELECT v.project_id, v.anonymous_id, v.vid FROM rollup_visitors AS v
        SEMI JOIN gone AS g ON v.project_id = g.project_id AND v.anonymous_id = g.anonymous_id""")
    for table, _ in BREAKDOWN_TABLES.values():
        cur.execute(f"DELETE FROM {table} AS t USING gone_visitors AS g WHERE t.vid = g.vid")
    cur.execute("DELETE FROM rollup_visitors AS t USING gone_visitors AS g WHERE t.vid = g.vid")
    cur.execute(f"""CREATE OR REPLACE TEMP TABLE kept AS
        SELECT e.project_id, e.source, e.medium, e.anonymous_id, e."timestamp"::DATE AS day
        FROM events AS e SEMI JOIN gone_visitors AS g ON e.project_id = g.project_id AND e.anonymous_id = g.anonymous_id
        WHERE e.seq <= {covered:d}""")
    _number_visitors(cur, "kept")
    cur.execute(f"CREATE OR REPLACE TEMP TABLE kept_visits AS {_with_vids('kept')}")
    for table, way in BREAKDOWN_TABLES.values():
        cur.execute(f"INSERT INTO {table} BY NAME {_visitor_rows('kept_visits', way)}")
    cur.execute("""DELETE FROM source_days AS t
        USING (SELECT DISTINCT project_id, day FROM gone) AS n
        WHERE t.project_id = n.project_id AND t.day = n.day""")
    cur.execute(f"""INSERT INTO source_days
        SELECT e.project_id, e."timestamp"::DATE AS day, e.source, e.medium, count(*)
        FROM events AS e SEMI JOIN (SELECT DISTINCT project_id, day FROM gone) AS n
            ON e.project_id = n.project_id AND e."timestamp"::DATE = n.day
        WHERE e.seq <= {covered:d}
        GROUP BY ALL""")
    for table in ("gone", "gone_visitors", "kept", "kept_visits"):
        cur.execute(f"DROP TABLE {table}")
    return deleted
