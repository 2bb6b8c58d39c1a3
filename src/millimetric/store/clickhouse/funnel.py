"""The funnel statement of the ClickHouse event store: one parameterised statement per request,
with the same answers as the embedded store (`store/duckdb/funnel.py`; see `FunnelPlan`).

Only the range's events named in a step, after the filters, are read. Each actor's events become
one array of (time since the range start, node, seq, step bits), sorted: time, then stored order
(node, seq, as raw rows are paged), with a bit per step the event's name matches (a name may be
several steps). One `arrayFold` over it keeps, per step j, the start time of the latest-starting
chain that has reached step j so far (-1: none). An event of step j extends the chain of step
j - 1 when it is no more than the window after that chain's start (the latest start is the one to
keep, since the window runs from the start). Every step of one event reads the state from before
it, so one event never counts twice. Only actors with events of both the first and the second
step can get past the first, so only their arrays are sorted and folded.

Why not `windowFunnel`: it orders events by timestamp only (ties fall in no defined order, ours
fall in stored order), and one event matching several conditions (a repeated step) can advance a
chain by more than one step unless `strict_deduplication`, which instead ends the chain at a
repeat; neither is the rule the embedded store and the reference follow.
"""

from __future__ import annotations

from millimetric.events.model import IDENTIFY_EVENT
from millimetric.events.queries import FUNNEL_BY, FunnelCounts, FunnelPlan, require_mapping
from millimetric.store.clickhouse.reads import PROJECT, Query, selection

# The actor (or actors) of each picked event. `by=user` stitches as the user_id filter does: an
# event belongs to its own user_id and to every user an `$identify` (in any time range) linked its
# anonymous_id to, once each.
_ACTOR_SQL = {
    "anonymous": "anonymous_id",
    "user": "arrayJoin(arrayDistinct(arrayConcat(if(isNull(user_id), [], [assumeNotNull(user_id)]), linked_users)))",
}
require_mapping("ClickHouse", "funnel actors", _ACTOR_SQL, FUNNEL_BY)
_LINKS_SQL = f"""LEFT JOIN (
            SELECT anonymous_id, groupUniqArray(assumeNotNull(user_id)) AS linked_users FROM events
            WHERE {PROJECT} AND event_name = {{identify:String}} AND user_id IS NOT NULL
            GROUP BY anonymous_id
        ) AS links ON links.anonymous_id = picked.anonymous_id"""
_NONE = -1  # no chain has reached the step


def funnel_sql(where: str, plan: FunnelPlan) -> str:
    n = len(plan.steps)
    bits = " + ".join(f"toUInt16(event_name = {{step_{j}:String}}) * {1 << (j - 1)}" for j in range(1, n + 1))
    steps = ["if(bitTest(e.4, 0), e.1, acc[1])"]
    for j in range(2, n + 1):
        steps.append(
            f"if(bitTest(e.4, {j - 1}) AND acc[{j - 1}] != {_NONE} AND e.1 - acc[{j - 1}] <= {{window_us:Int64}}, "
            f"acc[{j - 1}], acc[{j}])"
        )
    empty = f"CAST([{', '.join([str(_NONE)] * n)}], 'Array(Int64)')"
    # Actors that cannot get past the first step fold an empty array.
    timeline = "arraySort(if(entered AND may_go_on, timeline, []))"
    fold = f"arrayFold((acc, e) -> [{', '.join(steps)}], {timeline}, {empty})"
    counts = ", ".join(["countIf(entered)"] + [f"countIf(reached[{j}] != {_NONE})" for j in range(2, n + 1)])
    actor = _ACTOR_SQL[plan.by]
    links = _LINKS_SQL if plan.by == "user" else ""
    return f"""SELECT {counts} FROM (
            SELECT {fold} AS reached, entered FROM (
                SELECT groupArray((t, node, seq, bits)) AS timeline, max(bitTest(bits, 0)) = 1 AS entered,
                    max(bitTest(bits, 1)) = 1 AS may_go_on
                FROM (
                    SELECT {actor} AS actor, t, node, seq, bits FROM (
                        SELECT anonymous_id, user_id, seq, toString(node) AS node,
                            toUnixTimestamp64Micro(timestamp)
                                - toUnixTimestamp64Micro({{start:DateTime64(6, 'UTC')}}) AS t,
                            {bits} AS bits
                        FROM events WHERE {where} AND event_name IN {{names:Array(String)}}
                    ) AS picked {links}
                )
                GROUP BY actor
            )
        )"""


def select_funnel(query: Query, project_id: str, plan: FunnelPlan) -> FunnelCounts:
    """How many actors reached each step, in step order."""
    where, params = selection(project_id, plan.range, plan.filters)
    params["names"] = list(dict.fromkeys(plan.steps))
    params.update({f"step_{j}": step for j, step in enumerate(plan.steps, 1)})
    params["window_us"] = plan.window_seconds * 1_000_000
    if plan.by == "user":
        params["identify"] = IDENTIFY_EVENT
    (row,) = query(funnel_sql(where, plan), params)
    return [int(value) for value in row]
