"""Visitors per traffic source, pre-aggregated: what keeps /v1/sources over months exact and fast.

Exact distinct visitors per (source, medium) over 12 months of 10M events is a hash aggregate over
2.45M (source, medium, visitor) entries: about a second on the bench machine. The rollup keeps,
per project,
- `source_visitors`: one row per (source, medium, anonymous_id), and one per (source, anonymous_id)
  with medium NULL (every medium), holding the UTC days that visitor came that way;
- `source_days`: events per (UTC day, source, medium).
A read takes whole days of its range from the rollup and everything else (the partial days at the
range's ends, and events newer than the rollup) from the events table, so answers stay exact.

`rollup_state.covered_seq` says which events the rollup holds: exactly those with seq <= it. The
store process folds newer events in from time to time (`fold`); deleting events (forget,
retention) rebuilds the rows they touched (`delete_events`) in the same transaction.
"""

from __future__ import annotations

import duckdb

DDL = (
    """CREATE TABLE IF NOT EXISTS source_visitors (
        project_id VARCHAR, source VARCHAR, medium VARCHAR, anonymous_id VARCHAR,
        first_day DATE, last_day DATE, days DATE[])""",
    """CREATE TABLE IF NOT EXISTS source_days (
        project_id VARCHAR, day DATE, source VARCHAR, medium VARCHAR, events BIGINT)""",
    "CREATE TABLE IF NOT EXISTS rollup_state (covered_seq BIGINT NOT NULL)",
    "INSERT INTO rollup_state SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM rollup_state)",
)

# Both levels of `source_visitors` from a relation of (project_id, source, medium, anonymous_id, day).
_VISITOR_ROWS = """
    SELECT project_id, source, medium, anonymous_id, min(day) AS first_day, max(day) AS last_day,
           list(DISTINCT day ORDER BY day) AS days
    FROM {relation} GROUP BY project_id, source, medium, anonymous_id
    UNION ALL
    SELECT project_id, source, NULL, anonymous_id, min(day), max(day), list(DISTINCT day ORDER BY day)
    FROM {relation} GROUP BY project_id, source, anonymous_id"""
_SAME_VISITOR = """t.project_id = n.project_id AND t.source = n.source AND t.medium IS NOT DISTINCT FROM n.medium
    AND t.anonymous_id = n.anonymous_id"""
_SAME_DAY = "t.project_id = n.project_id AND t.day = n.day AND t.source = n.source AND t.medium = n.medium"


def covered_seq(cur: duckdb.DuckDBPyConnection) -> int:
    return cur.execute("SELECT covered_seq FROM rollup_state").fetchone()[0]


def fold(cur: duckdb.DuckDBPyConnection) -> int:
    """Fold events newer than the rollup into it, in one transaction; returns how many."""
    cur.execute("BEGIN TRANSACTION")
    try:
        covered = covered_seq(cur)
        upto = cur.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
        if upto <= covered:
            cur.execute("ROLLBACK")
            return 0
        cur.execute(
            """CREATE OR REPLACE TEMP TABLE fresh AS
            SELECT project_id, source, medium, anonymous_id, "timestamp"::DATE AS day FROM events
            WHERE seq > $covered AND seq <= $upto""",
            {"covered": covered, "upto": upto},
        )
        cur.execute(f"""MERGE INTO source_days AS t
            USING (SELECT project_id, day, source, medium, count(*) AS events FROM fresh GROUP BY ALL) AS n
            ON {_SAME_DAY}
            WHEN MATCHED THEN UPDATE SET events = t.events + n.events
            WHEN NOT MATCHED THEN INSERT VALUES (n.project_id, n.day, n.source, n.medium, n.events)""")
        cur.execute(f"""MERGE INTO source_visitors AS t
            USING ({_VISITOR_ROWS.format(relation="fresh")}) AS n
            ON {_SAME_VISITOR}
            WHEN MATCHED THEN UPDATE SET first_day = least(t.first_day, n.first_day),
                last_day = greatest(t.last_day, n.last_day),
                days = list_sort(list_distinct(list_concat(t.days, n.days)))
            WHEN NOT MATCHED THEN INSERT VALUES
                (n.project_id, n.source, n.medium, n.anonymous_id, n.first_day, n.last_day, n.days)""")
        cur.execute("UPDATE rollup_state SET covered_seq = $upto", {"upto": upto})
        cur.execute("DROP TABLE fresh")
        cur.execute("COMMIT")
        return upto - covered
    except BaseException:
        cur.execute("ROLLBACK")
        raise


def delete_events(cur: duckdb.DuckDBPyConnection, condition: str, params: dict) -> int:
    """DELETE FROM events WHERE `condition`, and rebuild the rollup rows of the visitors and days
    it touched from the events left. Run inside the caller's transaction; returns rows deleted."""
    covered = covered_seq(cur)
    cur.execute(
        f"""CREATE OR REPLACE TEMP TABLE gone AS
        SELECT DISTINCT project_id, anonymous_id, "timestamp"::DATE AS day FROM events
        WHERE ({condition}) AND seq <= {covered:d}""",
        params,
    )
    deleted = cur.execute(f"DELETE FROM events WHERE {condition}", params).fetchone()[0]
    cur.execute("""DELETE FROM source_visitors AS t
        USING (SELECT DISTINCT project_id, anonymous_id FROM gone) AS n
        WHERE t.project_id = n.project_id AND t.anonymous_id = n.anonymous_id""")
    remaining = f"""(SELECT e.project_id, e.source, e.medium, e.anonymous_id, e."timestamp"::DATE AS day
        FROM events AS e SEMI JOIN (SELECT DISTINCT project_id, anonymous_id FROM gone) AS n
            ON e.project_id = n.project_id AND e.anonymous_id = n.anonymous_id
        WHERE e.seq <= {covered:d})"""
    cur.execute(f"INSERT INTO source_visitors {_VISITOR_ROWS.format(relation=remaining)}")
    cur.execute("""DELETE FROM source_days AS t
        USING (SELECT DISTINCT project_id, day FROM gone) AS n
        WHERE t.project_id = n.project_id AND t.day = n.day""")
    cur.execute(f"""INSERT INTO source_days
        SELECT e.project_id, e."timestamp"::DATE AS day, e.source, e.medium, count(*)
        FROM events AS e SEMI JOIN (SELECT DISTINCT project_id, day FROM gone) AS n
            ON e.project_id = n.project_id AND e."timestamp"::DATE = n.day
        WHERE e.seq <= {covered:d}
        GROUP BY ALL""")
    cur.execute("DROP TABLE gone")
    return deleted
