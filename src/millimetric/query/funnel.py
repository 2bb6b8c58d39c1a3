"""Funnels (GET /v1/funnel and the MCP `funnel` tool): parameters -> `FunnelPlan` -> one store
statement -> the JSON answer. One function, `run_funnel`, serves both callers, so the REST
endpoint and the MCP tool cannot drift apart.
"""

from __future__ import annotations

from typing import Any, Mapping

from millimetric.errors import ApiError
from millimetric.events.queries import FUNNEL_BY, FunnelPlan
from millimetric.query.params import FILTER_MAX_LENGTH, Query, filters, invalid, time_range
from millimetric.store.interface import EventStore

MIN_STEPS, MAX_STEPS = 2, 10
DEFAULT_WINDOW_SECONDS = 86_400
MAX_WINDOW_SECONDS = 366 * 86_400


def _steps(query: Query) -> tuple[str, ...]:
    raw = query.get("steps")
    if raw is None or not raw.strip():
        raise invalid("steps", f"required: {MIN_STEPS} to {MAX_STEPS} event names, comma-separated")
    steps = tuple(part.strip() for part in raw.split(","))
    if not MIN_STEPS <= len(steps) <= MAX_STEPS:
        raise invalid("steps", f"{len(steps)} given: a funnel has {MIN_STEPS} to {MAX_STEPS} steps")
    for number, step in enumerate(steps, 1):
        if not step or len(step) > FILTER_MAX_LENGTH:
            raise invalid("steps", f"step {number} must be an event name of 1 to {FILTER_MAX_LENGTH} characters")
    return steps


def _window(query: Query) -> int:
    raw = query.get("window")
    if raw is None:
        return DEFAULT_WINDOW_SECONDS
    text = raw.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 9 or not 1 <= int(text) <= MAX_WINDOW_SECONDS:
        raise invalid("window", f"must be a whole number of seconds from 1 to {MAX_WINDOW_SECONDS}")
    return int(text)


def _by(query: Query) -> str:
    raw = query.get("by")
    if raw is None:
        return FUNNEL_BY[0]
    if raw not in FUNNEL_BY:
        raise ApiError("invalid_params", {"param": "by", "reason": "unknown value", "allowed": list(FUNNEL_BY)})
    return raw


def funnel_plan(query: Query, retention_days: int | None) -> FunnelPlan:
    """Validate every parameter (400 `invalid_params` naming the first bad one)."""
    return FunnelPlan(
        range=time_range(query, retention_days),
        filters=filters(query),
        steps=_steps(query),
        window_seconds=_window(query),
        by=_by(query),
    )


def answer(plan: FunnelPlan, counts: list[int]) -> dict[str, Any]:
    """Per step: `count` actors reached it; `conversion` = count / the first step's count (the
    share of those who entered the funnel); `drop_off` = 1 - count / the previous step's count
    (the share of the previous step's actors lost here; 0 for the first step). Both are 0 when
    their divisor is 0."""
    first = counts[0]
    steps = []
    for number, (event, count) in enumerate(zip(plan.steps, counts)):
        previous = counts[number - 1] if number else count
        steps.append(
            {
                "event": event,
                "count": count,
                "conversion": count / first if first else 0.0,
                "drop_off": 1 - count / previous if number and previous else 0.0,
            }
        )
    return {"by": plan.by, "steps": steps}


def run_funnel(
    store: EventStore, project_id: str, query: Mapping[str, str], retention_days: int | None
) -> dict[str, Any]:
    """The funnel answer `{"by", "steps": [{"event", "count", "conversion", "drop_off"}]}` for the
    REST query parameters in `query` (`from`, `to`, `steps` as a comma list, `window`, `by` and the
    read filters, all strings), read from `project_id`'s events; `retention_days` caps the range.

    Raises `ApiError("invalid_params")` (details: `param`, `reason`) for a bad parameter, before
    any read; `StoreError` when the store fails. Blocking: call it in a worker thread.
    """
    plan = funnel_plan(query, retention_days)
    return answer(plan, store.funnel(project_id, plan))
