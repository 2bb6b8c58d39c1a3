"""The funnel statement of the DuckDB event store: one parameterised statement per request.

How it counts (exact; see `FunnelPlan` for the rules): only the range's events named in a step,
after the filters, are read. Each actor's events are taken in (timestamp, seq) order. For step j,
`s{j}` on an event is the start time of the latest-starting chain that reaches step j with that
event: the latest `s{j-1}` on any earlier event, if the event is no more than the window after it.
The latest start is the one to keep, since the window runs from the start. An actor reached step j
when any of their events has an `s{j}`. Each step is one window pass over the step events, so a
funnel of n steps costs n - 1 sorts of them (partitioned by actor) and no self-join.
"""

from __future__ import annotations

from typing import Any

import duckdb

from millimetric.events.model import IDENTIFY_EVENT
from millimetric.events.queries import FUNNEL_BY, FunnelCounts, FunnelPlan, require_mapping
from millimetric.store.duckdb.reads import selection

# (actor, t, seq, event_name) rows of the picked events. `by=user` stitches as the user_id filter
# does: an event belongs to its own user_id and to every user an `$identify` (in any time range)
# linked its anonymous_id to; UNION keeps one row per (user, event).
_ACTORS_SQL = {
    "anonymous": "SELECT anonymous_id AS actor, t, seq, event_name FROM picked",
    "user": """SELECT user_id AS actor, t, seq, event_name FROM picked WHERE user_id IS NOT NULL
        UNION
        SELECT identities.user_id, t, seq, event_name FROM picked JOIN (
            SELECT DISTINCT anonymous_id, user_id FROM events
            WHERE project_id = $project_id AND event_name = $identify AND user_id IS NOT NULL
        ) AS identities USING (anonymous_id)""",
}
require_mapping("DuckDB", "funnel actors", _ACTORS_SQL, FUNNEL_BY)
_EARLIER = "(PARTITION BY actor ORDER BY t, seq ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)"


def funnel_sql(with_clause: str, where: str, plan: FunnelPlan) -> str:
    names = ", ".join(f"$name_{i}" for i in range(len(set(plan.steps))))
    ctes = [
        f"""picked AS (
            SELECT anonymous_id, user_id, event_name, epoch_us("timestamp") AS t, seq FROM events
            WHERE {where} AND event_name IN ({names})
        )""",
        f"actors AS ({_ACTORS_SQL[plan.by]})",
        "level1 AS (SELECT actor, t, seq, event_name, CASE WHEN event_name = $step_1 THEN t END AS s1 FROM actors)",
    ]
    for j in range(2, len(plan.steps) + 1):
        latest = f"max(s{j - 1}) OVER earlier"
        ctes.append(
            f"""level{j} AS (
                SELECT *, CASE WHEN event_name = $step_{j} AND t - {latest} <= $window_us THEN {latest} END AS s{j}
                FROM level{j - 1} WINDOW earlier AS {_EARLIER}
            )"""
        )
    n = len(plan.steps)
    reached = ", ".join(f"max(s{j}) AS r{j}" for j in range(1, n + 1))
    counts = ", ".join(f"count(r{j})" for j in range(1, n + 1))
    prefix = f"{with_clause}, " if with_clause else "WITH "
    return f"""{prefix}{", ".join(ctes)}
        SELECT {counts} FROM (SELECT {reached} FROM level{n} GROUP BY actor)"""


def select_funnel(cur: duckdb.DuckDBPyConnection, project_id: str, plan: FunnelPlan) -> FunnelCounts:
    """How many actors reached each step, in step order."""
    with_clause, where, params = selection(project_id, plan.range, plan.filters)
    extra: dict[str, Any] = {f"name_{i}": name for i, name in enumerate(dict.fromkeys(plan.steps))}
    extra.update({f"step_{j}": step for j, step in enumerate(plan.steps, 1)})
    extra["window_us"] = plan.window_seconds * 1_000_000
    if plan.by == "user":
        extra["identify"] = IDENTIFY_EVENT
    row = cur.execute(funnel_sql(with_clause, where, plan), {**params, **extra}).fetchall()[0]
    return [int(value) for value in row]
