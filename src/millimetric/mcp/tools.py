"""The MCP tools: a JSON Schema per tool that mirrors the REST parameters, and what each answers.

A read tool turns its arguments into the query string its REST endpoint would get and runs the
same plan builders (`millimetric.query.params`) and executors (`millimetric.query.execute`), so
its numbers and its refusals are the endpoint's. `track_event` takes the `/v1/track` body (its
schema is the OpenAPI document's) through the same validation, enrichment and durable writer.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any, Awaitable, Callable, Mapping, NamedTuple

import msgspec
from starlette.requests import Request

from millimetric.api import ingest
from millimetric.api.docs import openapi_document
from millimetric.api.services import Services
from millimetric.auth import ratelimit
from millimetric.auth.guard import Principal
from millimetric.events.queries import BREAKDOWNS, FILTERS, FUNNEL_BY, GROUP_BY, INTERVALS, METRICS, UTC
from millimetric.ingest import schemas
from millimetric.query import execute, params
from millimetric.query import funnel as funnels
from millimetric.query.cursor import CursorCodec
from millimetric.store.control import Project

Arguments = dict[str, Any]
Answer = dict[str, Any]


class Caller(NamedTuple):
    """Who is calling (what our authentication found) and the HTTP request that carried the call."""

    services: Services
    principal: Principal
    request: Request


# ---- argument schemas (mirroring the REST query parameters) -----------------------------------
def _string(description: str, max_length: int = params.FILTER_MAX_LENGTH) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "maxLength": max_length, "description": description}


def _limit(bounds: tuple[int, int, int], what: str) -> dict[str, Any]:
    low, high, default = bounds
    return {"type": "integer", "minimum": low, "maximum": high, "default": default, "description": what}


RANGE = {
    "from": _string("Start of the range, inclusive: ISO 8601 date or date-time (no offset means UTC).", 64),
    "to": _string("End of the range, exclusive, after `from`: ISO 8601 date or date-time.", 64),
}
FILTER_DESCRIPTIONS = {
    "event": "Only this event name.",
    "source": "Only this source (e.g. google, facebook, direct).",
    "medium": "Only this medium (e.g. paid, organic, social, email, referral, direct).",
    "user_id": "Only this user: their events and those of every anonymous id an identify linked to them.",
    "anonymous_id": "Only this anonymous id.",
    "country": "Only this country (ISO 3166-1 alpha-2).",
    "session_id": "Only this session.",
}
FILTER_PROPERTIES = {name: _string(FILTER_DESCRIPTIONS[name]) for name in FILTERS}
METRIC = {
    "type": "string",
    "enum": list(METRICS),
    "default": "count",
    "description": "count (events), uniques (distinct anonymous ids), sessions, or users (distinct user ids).",
}
GROUP_BY_ARGUMENT = {
    "description": "Columns to group by: a list, or a comma-separated string as in the REST API.",
    "anyOf": [
        {"type": "array", "items": {"type": "string", "enum": list(GROUP_BY)}, "uniqueItems": True},
        {"type": "string"},
    ],
}
PROJECT_SELECTION = {
    "project_id": _string("One of the account's projects, by id. Omit all three to span every project.", 128),
    "project_slug": _string("One of the account's projects, by slug.", 128),
    "project_ids": {
        "type": "array",
        "items": {"type": "string", "minLength": 1, "maxLength": 128},
        "minItems": 1,
        "uniqueItems": True,
        "description": "Several of the account's projects, by id or slug.",
    },
}


def object_schema(properties: dict[str, Any], required: tuple[str, ...] = ("from", "to")) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


def track_event_schema() -> dict[str, Any]:
    """The OpenAPI document's `TrackEvent` with its one reference inlined (MCP clients expect a
    self-contained schema)."""
    components = openapi_document()["components"]["schemas"]
    schema = dict(components["TrackEvent"])
    properties = dict(schema["properties"])
    properties["context"] = {"oneOf": [components["VisitorContext"], {"type": "null"}]}
    return {**schema, "properties": properties, "additionalProperties": False}


# ---- read tools (one project) ------------------------------------------------------------------
def as_query(arguments: Arguments) -> dict[str, str]:
    """The arguments spelt as the REST query string: numbers as digits, lists comma-joined."""
    query = {}
    for name, value in arguments.items():
        if isinstance(value, list):
            query[name] = ",".join(value)
        elif value is not None:
            query[name] = str(value)
    return query


async def query_events(services: Services, project: Project, query: Mapping[str, str]) -> Answer:
    plan = params.rows_plan(query, project.retention_days)
    codec = CursorCodec(services.control.pepper)
    token = query.get("cursor")
    if token is not None:
        plan = codec.apply(token, project.id, plan)
    return await asyncio.to_thread(execute.events_page, services.events, codec, project.id, plan)


async def get_stats(services: Services, project: Project, query: Mapping[str, str]) -> Answer:
    plan = params.stats_plan(query, project.retention_days)
    return await asyncio.to_thread(execute.stats, services.events, project.id, plan)


async def top_sources(services: Services, project: Project, query: Mapping[str, str]) -> Answer:
    plan = params.sources_plan(query, project.retention_days)
    return await asyncio.to_thread(execute.sources, services.events, project.id, plan)


PAGEVIEW = "$pageview"


async def top_pages(services: Services, project: Project, query: Mapping[str, str]) -> Answer:
    """`GET /v1/stats?group_by=path&event=$pageview` (another `event` may be named)."""
    return await get_stats(services, project, {"event": PAGEVIEW, **query, "group_by": "path"})


async def funnel(services: Services, project: Project, query: Mapping[str, str]) -> Answer:
    return await asyncio.to_thread(funnels.run_funnel, services.events, project.id, query, project.retention_days)


ProjectRead = Callable[[Services, Project, Mapping[str, str]], Awaitable[Answer]]


class ReadTool(NamedTuple):
    name: str
    description: str
    properties: dict[str, Any]
    run: ProjectRead
    merge: Callable[[Mapping[str, str], list[tuple[Project, Answer]]], Answer]
    required: tuple[str, ...] = ("from", "to")


def _tagged(project: Project, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"project_id": project.id, **row} for row in rows]


def merge_rows(query: Mapping[str, str], answers: list[tuple[Project, Answer]]) -> Answer:
    rows = [row for project, answer in answers for row in _tagged(project, answer["rows"])]
    rows.sort(key=lambda row: dt.datetime.fromisoformat(row["timestamp"].replace("Z", "+00:00")), reverse=True)
    limit = int(query.get("limit", params.QUERY_LIMIT[2]))
    # A cursor pages through one project; across several, narrow the range or raise the limit.
    return {"rows": rows[:limit], "next_cursor": answers[0][1]["next_cursor"] if len(answers) == 1 else None}


def _merge_stats(query: Mapping[str, str], answers: list[tuple[Project, Answer]]) -> Answer:
    rows = [row for project, answer in answers for row in _tagged(project, answer["rows"])]
    rows.sort(key=lambda row: (row.get("bucket", ""), -row["value"]))
    limit = int(query.get("limit", params.STATS_LIMIT[2]))
    return {"metric": query.get("metric", "count"), "approximate": False, "rows": rows[:limit]}


def _merge_funnels(query: Mapping[str, str], answers: list[tuple[Project, Answer]]) -> Answer:
    rows = [{"project_id": project.id, "steps": answer["steps"]} for project, answer in answers]
    return {"by": query.get("by", FUNNEL_BY[0]), "rows": rows}


def _merge_sources(query: Mapping[str, str], answers: list[tuple[Project, Answer]]) -> Answer:
    rows = [row for project, answer in answers for row in _tagged(project, answer["rows"])]
    rows.sort(key=lambda row: -row["events"])
    limit = int(query.get("limit", params.SOURCES_LIMIT[2]))
    return {"breakdown": query.get("breakdown", "source_medium"), "rows": rows[:limit]}


READ_TOOLS = [
    ReadTool(
        "query_events",
        "Raw events, newest first (GET /v1/query): every stored field of each event. Pass `next_cursor` "
        "back as `cursor`, with the same range and filters, for the next page.",
        {
            **RANGE,
            **FILTER_PROPERTIES,
            "limit": _limit(params.QUERY_LIMIT, "Rows per page."),
            "cursor": {"type": "string", "minLength": 1, "description": "`next_cursor` of the previous page."},
        },
        query_events,
        merge_rows,
    ),
    ReadTool(
        "get_stats",
        "Counts, unique visitors, sessions or users, optionally grouped and bucketed by time (GET "
        "/v1/stats). Rows are sorted by bucket, then value descending.",
        {
            **RANGE,
            "metric": METRIC,
            **FILTER_PROPERTIES,
            "group_by": GROUP_BY_ARGUMENT,
            "interval": {"type": "string", "enum": list(INTERVALS), "description": "Adds a `bucket` column."},
            "tz": {"type": "string", "default": UTC, "description": "IANA time zone of the buckets."},
            "limit": _limit(params.STATS_LIMIT, "Maximum number of rows."),
        },
        get_stats,
        _merge_stats,
    ),
    ReadTool(
        "top_sources",
        "Traffic sources by events, with unique visitors and the paid share of each (GET /v1/sources).",
        {
            **RANGE,
            "breakdown": {
                "type": "string",
                "enum": list(BREAKDOWNS),
                "default": "source_medium",
                "description": "source_medium: a row per (source, medium); source: a row per source.",
            },
            "limit": _limit(params.SOURCES_LIMIT, "Maximum number of rows."),
        },
        top_sources,
        _merge_sources,
    ),
    ReadTool(
        "top_pages",
        "Pages by pageviews (or another metric), most first: GET /v1/stats with group_by=path and event=$pageview.",
        {
            **RANGE,
            "metric": METRIC,
            **{**FILTER_PROPERTIES, "event": _string("The event counted per page. Default: $pageview.")},
            "limit": _limit(params.STATS_LIMIT, "Maximum number of rows."),
        },
        top_pages,
        _merge_stats,
    ),
    ReadTool(
        "funnel",
        "Ordered conversion funnel (GET /v1/funnel): how many visitors (or users) did each step after "
        "the previous one within `window` seconds of the first, with conversion and drop-off per step.",
        {
            **RANGE,
            "steps": {
                "description": f"{funnels.MIN_STEPS} to {funnels.MAX_STEPS} event names in order (a step may "
                "repeat): a list, or a comma-separated string as in the REST API.",
                "anyOf": [
                    {
                        "type": "array",
                        "items": _string("An event name."),
                        "minItems": funnels.MIN_STEPS,
                        "maxItems": funnels.MAX_STEPS,
                    },
                    {"type": "string", "minLength": 1},
                ],
            },
            "window": {
                "type": "integer",
                "minimum": 1,
                "maximum": funnels.MAX_WINDOW_SECONDS,
                "default": funnels.DEFAULT_WINDOW_SECONDS,
                "description": "Seconds from the first step within which every later step must happen.",
            },
            "by": {
                "type": "string",
                "enum": list(FUNNEL_BY),
                "default": FUNNEL_BY[0],
                "description": "anonymous: per anonymous id; user: per user, stitched through identify.",
            },
            **FILTER_PROPERTIES,
        },
        funnel,
        _merge_funnels,
        ("from", "to", "steps"),
    ),
]


# ---- account tools -----------------------------------------------------------------------------
def project_summary(project: Project) -> dict[str, Any]:
    return {
        **project.public(),
        "retention_days": project.retention_days,
        "created_at": project.created_at.isoformat(),
    }


COMPARE_PROPERTIES = {
    **RANGE,
    "metric": {**METRIC, "enum": ["count", "uniques"], "description": "count (events) or uniques (visitors)."},
    "event": FILTER_PROPERTIES["event"],
    **PROJECT_SELECTION,
}


async def compare_projects(services: Services, projects: list[Project], query: Mapping[str, str]) -> Answer:
    """Each project's total of the metric over the range, largest first."""
    rows: list[dict[str, Any]] = []
    for project in projects:
        answer = await get_stats(services, project, query)
        value = answer["rows"][0]["value"] if answer["rows"] else 0
        rows.append({"project_id": project.id, "slug": project.slug, "name": project.name, "value": value})
    rows.sort(key=lambda row: -row["value"])
    return {"metric": query.get("metric", "count"), "rows": rows}


# ---- track_event -------------------------------------------------------------------------------
async def track_event(caller: Caller, arguments: Arguments) -> Answer:
    """`POST /v1/track` with an `sk_` key: the same decoding, checks, enrichment, rate limit and
    durable write; answered once the event is on disk."""
    services, principal = caller.services, caller.principal
    assert principal.project is not None  # sk_ keys belong to a project
    await ratelimit.enforce(services.limiter, principal.project.id, "/v1/track", principal.project.rate_limits)
    event = schemas.decode_track(msgspec.json.encode(arguments))
    base = await ingest.visit(caller.request, services, principal)
    rows = ingest.accepted_rows(base, services, principal, [event], None)
    duplicates = await ingest.store(services, principal.project.id, rows)
    answer: dict[str, Any] = {"ok": True, "event_id": event.event_id}
    if duplicates:
        answer["duplicate"] = True
    return answer


TRACK_EVENT_DESCRIPTION = (
    "Store one event, exactly as POST /v1/track does (needs an sk_ key). Answers once the event is durably stored."
)
