"""The MCP server proper: the official SDK's low-level server with our tools and resources.

Handlers find the caller on `request.state` (put there by `millimetric.mcp.http` after our key
check), answer through `millimetric.mcp.tools`, and turn refusals into the JSON-RPC errors the
SPEC names.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any, Mapping

import jsonschema
import msgspec
from mcp import types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from starlette.requests import Request

from millimetric import __version__
from millimetric.api.services import Services
from millimetric.auth import scopes
from millimetric.errors import ApiError
from millimetric.events.queries import Filters, RowsPlan, StatsPlan, TimeRange
from millimetric.mcp import tools
from millimetric.mcp.http import ACCOUNT_KINDS, MCP_BODY_LIMIT
from millimetric.mcp.tools import Arguments, Caller, ReadTool
from millimetric.query import execute
from millimetric.query.cursor import CursorCodec
from millimetric.store.control import Project
from millimetric.store.interface import StoreError, StoreOverloaded, StoreTimeout

log = logging.getLogger("millimetric.mcp")

# JSON-RPC error codes of the MCP server.
INVALID_ARGUMENTS = -32602  # unknown tool or resource, or arguments that fail validation
TOOL_FAILED = -32000  # insufficient_scope, and refusals of the layer below (rate_limited, ...)
UNKNOWN_PROJECT = -32004

RECENT_EVENTS = 100
SCHEMA_DAYS = 30
# Events may be stamped up to an hour ahead (SPEC: ingest), so "recent" reaches that far.
FUTURE_TOLERANCE = dt.timedelta(hours=1)
EARLIEST = dt.datetime(2000, 1, 1)
_encode = msgspec.json.Encoder().encode


def _caller(ctx: ServerRequestContext[Any, Any]) -> Caller:
    request = ctx.request
    assert isinstance(request, Request)
    caller = request.state.mcp_caller
    assert isinstance(caller, Caller)
    return caller


def _is_account(caller: Caller) -> bool:
    return caller.principal.key.kind in ACCOUNT_KINDS


# ---- tool catalogue ----------------------------------------------------------------------------
def _read_schema(tool: ReadTool, account: bool) -> dict[str, Any]:
    properties = {**tool.properties, **(tools.PROJECT_SELECTION if account else {})}
    return tools.object_schema(properties, tool.required)


def _catalogue(account: bool) -> dict[str, types.Tool]:
    """Every tool of one endpoint, by name: what tools/list shows a key allowed to use them all."""
    found = {
        tool.name: types.Tool(name=tool.name, description=tool.description, input_schema=_read_schema(tool, account))
        for tool in tools.READ_TOOLS
    }
    if account:
        found["list_projects"] = types.Tool(
            name="list_projects",
            description="The account's projects: id, slug, name, allowed origins, retention, creation time.",
            input_schema=tools.object_schema({}, required=()),
        )
        found["compare_projects"] = types.Tool(
            name="compare_projects",
            description="The account's projects ranked by events (count) or unique visitors (uniques) over a range.",
            input_schema=tools.object_schema(tools.COMPARE_PROPERTIES),
        )
    found["track_event"] = types.Tool(
        name="track_event", description=tools.TRACK_EVENT_DESCRIPTION, input_schema=tools.track_event_schema()
    )
    return found


PROJECT_TOOLS = _catalogue(account=False)
ACCOUNT_TOOLS = _catalogue(account=True)
READ_TOOLS = {tool.name: tool for tool in tools.READ_TOOLS}


def _allowed(caller: Caller, name: str) -> bool:
    """Only `sk_` keys may send events; every key that reached MCP may read."""
    if name == "track_event":
        return caller.principal.key.kind in scopes.INGEST
    return True


# ---- errors ------------------------------------------------------------------------------------
def _field_errors(error: jsonschema.ValidationError) -> dict[str, list[str]]:
    if error.validator == "required":
        return {name: ["Required"] for name in error.validator_value if name not in error.instance}
    if error.validator == "additionalProperties":
        allowed = error.schema.get("properties", {})
        return {name: ["Unknown argument"] for name in error.instance if name not in allowed}
    path = ".".join(str(part) for part in error.absolute_path) or "arguments"
    return {path: [error.message]}


def _check_arguments(schema: Mapping[str, Any], arguments: Arguments) -> None:
    errors: dict[str, list[str]] = {}
    for error in jsonschema.Draft202012Validator(schema).iter_errors(arguments):
        for field, messages in _field_errors(error).items():
            errors.setdefault(field, []).extend(messages)
    if errors:
        raise MCPError(INVALID_ARGUMENTS, "Invalid arguments", {"fieldErrors": errors})


def _from_api_error(error: ApiError) -> MCPError:
    """A refusal of the REST layer, as the JSON-RPC error an MCP client expects."""
    if error.code in ("invalid_params", "invalid_group_by", "invalid_payload"):
        details = dict(error.details or {})
        if "fieldErrors" not in details and "param" in details:
            details = {"fieldErrors": {details.pop("param"): [details.pop("reason")]}, **details}
        if error.code == "invalid_group_by":
            details = {"fieldErrors": {"group_by": [f"not groupable: {', '.join(details['rejected'])}"]}, **details}
        return MCPError(INVALID_ARGUMENTS, "Invalid arguments", {"error": error.code, **details})
    return MCPError(TOOL_FAILED, error.code, error.body())


def _from_store_error(error: StoreError) -> MCPError:
    log.error("event store: %s", error)
    code = "overloaded" if isinstance(error, (StoreTimeout, StoreOverloaded)) else "upstream_failed"
    return MCPError(TOOL_FAILED, code, {"error": code})


# ---- project selection (/mcp/account) ----------------------------------------------------------
async def _visible_projects(caller: Caller) -> list[Project]:
    account_id = caller.principal.key.account_id
    every = await asyncio.to_thread(caller.services.control.list_projects)
    return [project for project in every if project.account_id == account_id]


async def _selected_projects(caller: Caller, arguments: Arguments) -> list[Project]:
    """The key's own project, or (account keys) the named ones, or every visible one."""
    if caller.principal.project is not None:
        return [caller.principal.project]
    visible = await _visible_projects(caller)
    by_id = {project.id: project for project in visible}
    by_slug = {project.slug: project for project in visible}
    wanted: list[tuple[str, str, Project | None]] = []
    if "project_id" in arguments:
        wanted.append(("project_id", arguments["project_id"], by_id.get(arguments["project_id"])))
    if "project_slug" in arguments:
        wanted.append(("project_slug", arguments["project_slug"], by_slug.get(arguments["project_slug"])))
    for name in arguments.get("project_ids", ()):
        wanted.append(("project_ids", name, by_id.get(name) or by_slug.get(name)))
    if not wanted:
        return visible
    unknown = [value for _, value, project in wanted if project is None]
    if unknown:
        raise MCPError(UNKNOWN_PROJECT, "Unknown project", {"error": "unknown_project", "projects": unknown})
    return list({project.id: project for _, _, project in wanted if project is not None}.values())


# ---- handlers ----------------------------------------------------------------------------------
async def _list_tools(
    ctx: ServerRequestContext[Any, Any], _params: types.PaginatedRequestParams | None
) -> types.ListToolsResult:
    caller = _caller(ctx)
    catalogue = ACCOUNT_TOOLS if _is_account(caller) else PROJECT_TOOLS
    return types.ListToolsResult(tools=[tool for name, tool in catalogue.items() if _allowed(caller, name)])


def _result(answer: dict[str, Any]) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=_encode(answer).decode())], structured_content=answer
    )


async def _call_tool(ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams) -> types.CallToolResult:
    caller = _caller(ctx)
    catalogue = ACCOUNT_TOOLS if _is_account(caller) else PROJECT_TOOLS
    tool = catalogue.get(params.name)
    if tool is None:
        raise MCPError(INVALID_ARGUMENTS, f"Unknown tool: {params.name}", {"error": "unknown_tool"})
    if not _allowed(caller, params.name):
        raise MCPError(TOOL_FAILED, "insufficient_scope", {"error": "insufficient_scope"})
    arguments: Arguments = dict(params.arguments or {})
    _check_arguments(tool.input_schema, arguments)
    try:
        return _result(await _run(caller, params.name, arguments))
    except ApiError as error:
        raise _from_api_error(error) from None
    except StoreError as error:
        raise _from_store_error(error) from None


async def _run(caller: Caller, name: str, arguments: Arguments) -> dict[str, Any]:
    if name == "track_event":
        return await tools.track_event(caller, arguments)
    if name == "list_projects":
        return {"projects": [tools.project_summary(project) for project in await _visible_projects(caller)]}
    projects = await _selected_projects(caller, arguments)
    query = tools.as_query({k: v for k, v in arguments.items() if k not in tools.PROJECT_SELECTION})
    if name == "compare_projects":
        return await tools.compare_projects(caller.services, projects, query)
    tool = READ_TOOLS[name]
    if caller.principal.project is not None:
        return await tool.run(caller.services, projects[0], query)
    if "cursor" in query and len(projects) != 1:
        raise ApiError("invalid_params", {"param": "cursor", "reason": "pages through exactly one project"})
    answers = [(project, await tool.run(caller.services, project, query)) for project in projects]
    return tool.merge(query, answers)


# ---- resources ---------------------------------------------------------------------------------
RECENT = types.Resource(
    uri="events://recent",
    name="recent events",
    description=f"The last {RECENT_EVENTS} events (every project of the account with an ak_ key).",
    mime_type="application/json",
)
SCHEMA = types.Resource(
    uri="schema://events",
    name="event names",
    description=f"Event names seen in the last {SCHEMA_DAYS} days, with their counts.",
    mime_type="application/json",
)
PROJECTS = types.Resource(
    uri="projects://all",
    name="projects",
    description="The account's projects (ak_ keys only).",
    mime_type="application/json",
)


async def _list_resources(
    ctx: ServerRequestContext[Any, Any], _params: types.PaginatedRequestParams | None
) -> types.ListResourcesResult:
    account = _is_account(_caller(ctx))
    return types.ListResourcesResult(resources=[RECENT, SCHEMA, *([PROJECTS] if account else [])])


def _since(project: Project, now: dt.datetime, days: int | None) -> dt.datetime:
    """The oldest instant a read over `project` may start at: `days` back, within retention."""
    limits = [days, project.retention_days]
    span = min((d for d in limits if d is not None), default=None)
    return EARLIEST if span is None else max(EARLIEST, now - dt.timedelta(days=span))


def _recent(services: Services, projects: list[Project], tagged: bool) -> dict[str, Any]:
    end = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) + FUTURE_TOLERANCE
    codec = CursorCodec(services.control.pepper)
    answers = []
    for project in projects:
        plan = RowsPlan(TimeRange(_since(project, end, None), end), Filters(), RECENT_EVENTS)
        answers.append((project, execute.events_page(services.events, codec, project.id, plan)))
    if not tagged:
        return {"rows": answers[0][1]["rows"]}
    return {"rows": tools.merge_rows({"limit": str(RECENT_EVENTS)}, answers)["rows"]}


def _event_names(services: Services, projects: list[Project]) -> dict[str, Any]:
    end = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) + FUTURE_TOLERANCE
    counts: dict[str, int] = {}
    for project in projects:
        plan = StatsPlan(
            TimeRange(_since(project, end, SCHEMA_DAYS), end), Filters(), "count", ("event_name",), None, "UTC", 1000
        )
        for row in execute.stats(services.events, project.id, plan)["rows"]:
            counts[row["event_name"]] = counts.get(row["event_name"], 0) + row["value"]
    events = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return {"days": SCHEMA_DAYS, "events": [{"event_name": name, "count": count} for name, count in events]}


async def _read_resource(
    ctx: ServerRequestContext[Any, Any], params: types.ReadResourceRequestParams
) -> types.ReadResourceResult:
    caller = _caller(ctx)
    account = _is_account(caller)
    uri = str(params.uri)
    try:
        if uri == PROJECTS.uri and account:
            answer = {"projects": [tools.project_summary(project) for project in await _visible_projects(caller)]}
        elif uri in (RECENT.uri, SCHEMA.uri):
            projects = await _selected_projects(caller, {})
            if uri == RECENT.uri:
                answer = await asyncio.to_thread(_recent, caller.services, projects, account)
            else:
                answer = await asyncio.to_thread(_event_names, caller.services, projects)
        else:
            raise MCPError(INVALID_ARGUMENTS, f"Unknown resource: {uri}", {"error": "unknown_resource"})
    except StoreError as error:
        raise _from_store_error(error) from None
    return types.ReadResourceResult(
        contents=[types.TextResourceContents(uri=uri, mime_type="application/json", text=_encode(answer).decode())]
    )


def create_server() -> Server[Any]:
    return Server(
        "millimetric",
        version=__version__,
        instructions=(
            "Web and product analytics of this Millimetric server. Time ranges are ISO 8601, `from` "
            "inclusive and `to` exclusive; counts are exact."
        ),
        on_list_tools=_list_tools,
        on_call_tool=_call_tool,
        on_list_resources=_list_resources,
        on_read_resource=_read_resource,
    )


def create_manager() -> StreamableHTTPSessionManager:
    """A stateless session manager answering with JSON; `run()` it once, for the app's lifetime."""
    return StreamableHTTPSessionManager(
        create_server(),
        json_response=True,
        stateless=True,
        # Host and Origin checks would refuse requests that came through a reverse proxy (421);
        # every request is authorised by its key before it gets here.
        security_settings=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        max_request_body_size=MCP_BODY_LIMIT,
    )
