"""The MCP server (`/mcp`, `/mcp/account`) against a real server process, through the official
Python SDK client (2.x): the HTTP refusals before MCP starts, initialize, tools/list per key kind,
every tool with its numbers equal to the REST endpoint's for the same arguments, `track_event`
storing an event, the JSON-RPC errors, the resources, and an account key across two projects."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import httpx
import httpx2
import pytest
import redis
import sqlalchemy as sa
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from millimetric.settings import Settings
from millimetric.store.control import ControlPlane
from millimetric.store.schema import accounts

from conftest import Keys, ServerProcess, bearer, cli, cli_project

pytestmark = pytest.mark.slow  # a real server process

START = dt.datetime.now(dt.timezone.utc).replace(microsecond=0, minute=0, second=0) - dt.timedelta(hours=6)
WINDOW = {"from": START.isoformat(), "to": (START + dt.timedelta(hours=5)).isoformat()}
READ_TOOLS = {"query_events", "get_stats", "top_sources", "top_pages", "funnel"}


class Live(NamedTuple):
    url: str
    shop: Keys
    blog: Keys
    ak: str
    foreign_project_id: str  # a project of another account


def _events(n: int, site: str) -> list[dict[str, Any]]:
    sources = ["google", "newsletter", None]
    return [
        {
            "event": ["$pageview", "$pageview", "signup", "purchase"][i % 4],
            "event_id": f"{site}-{i}",
            "anonymous_id": f"{site}-a{i % 7}",
            "timestamp": (START + dt.timedelta(minutes=4 * i)).isoformat(),
            "url": f"https://{site}.example.com/p/{i % 5}"
            + (f"?utm_source={sources[i % 3]}&utm_medium={'cpc' if i % 2 else 'email'}" if sources[i % 3] else ""),
            "path": f"/p/{i % 5}",
            "referrer": "https://www.google.com/" if i % 3 == 2 else None,
            "properties": {"i": i},
        }
        for i in range(n)
    ]


def _foreign_project(data_dir: Path) -> str:
    """A project of a second account, made in the control plane the running server uses."""
    settings = Settings.from_env(environ={}, data_dir=data_dir)
    control = ControlPlane(settings.control_plane_url, settings.resolved_pepper())
    try:
        account_id = str(uuid.uuid4())
        with control.engine.begin() as conn:
            conn.execute(sa.insert(accounts).values(id=account_id, name="other", created_at=dt.datetime.now(dt.UTC)))
        project, _ = control.create_project("elsewhere", account_id=account_id)
        return project.id
    finally:
        control.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    data_dir = tmp_path_factory.mktemp("mcp") / "data"
    shop, blog = cli_project(data_dir, "shop"), cli_project(data_dir, "blog")
    ak = json.loads(cli("keys", "create", "shop", "--kind", "ak", "--json", data_dir=data_dir).stdout)["key"]
    foreign = _foreign_project(data_dir)
    server = ServerProcess(data_dir).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for keys, n in ((shop, 60), (blog, 25)):
                events = _events(n, keys.slug)
                assert client.post("/v1/batch", json={"events": events}, headers=bearer(keys.sk)).status_code == 202
            linked = {"anonymous_id": "shop-a1", "user_id": "u-1"}
            assert client.post("/v1/identify", json=linked, headers=bearer(shop.sk)).status_code == 200
        yield Live(server.url, shop, blog, ak, foreign)
    finally:
        server.kill()


def _client(live: Live, token: str, path: str = "/mcp", mode: str = "legacy") -> Client:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
    return Client(streamable_http_client(f"{live.url}{path}", http_client=http), mode=mode)


def _run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


async def _call(live: Live, token: str, tool: str, arguments: dict[str, Any], path: str = "/mcp") -> dict[str, Any]:
    async with _client(live, token, path) as client:
        result = await client.call_tool(tool, arguments)
    assert not result.is_error
    assert len(result.content) == 1 and result.content[0].type == "text"
    assert json.loads(result.content[0].text) == result.structured_content  # the same data twice
    return result.structured_content


async def _error(live: Live, token: str, tool: str, arguments: dict[str, Any], path: str = "/mcp") -> MCPError:
    async with _client(live, token, path) as client:
        with pytest.raises(MCPError) as raised:
            await client.call_tool(tool, arguments)
    return raised.value


def _rest(live: Live, route: str, token: str, query: dict[str, Any]) -> dict[str, Any]:
    answer = httpx.get(f"{live.url}{route}", params=query, headers=bearer(token), timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


# ---- HTTP-level refusals, before MCP starts -----------------------------------------------------
def test_http_refusals_before_mcp(live: Live) -> None:
    message = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    accept = {"Accept": "application/json, text/event-stream"}
    cases = [
        ("/mcp", {}, 401, "missing_bearer_token"),
        ("/mcp", {"Authorization": "Bearer nope"}, 401, "malformed_api_key"),
        ("/mcp", {"Authorization": f"Bearer {live.shop.rk[:-4]}xxxx"}, 401, "invalid_api_key"),
        ("/mcp", {"Authorization": f"Bearer {live.shop.pk}"}, 403, "key_kind_not_allowed"),
        ("/mcp", {"Authorization": f"Bearer {live.ak}"}, 403, "key_kind_not_allowed"),
        ("/mcp/account", {}, 401, "missing_bearer_token"),
        *(("/mcp/account", {"Authorization": f"Bearer {key}"}, 403, "account_key_required") for key in live.shop[2:]),
    ]
    for path, headers, status, code in cases:
        answer = httpx.post(f"{live.url}{path}", json=message, headers={**accept, **headers}, timeout=30)
        assert (answer.status_code, answer.json()) == (status, {"error": code}), (path, headers)
    for path, token in (("/mcp", live.shop.rk), ("/mcp/account", live.ak)):
        answer = httpx.get(f"{live.url}{path}", headers={**accept, "Authorization": f"Bearer {token}"}, timeout=30)
        assert (answer.status_code, answer.json()["error"]) == (405, "method_not_allowed")


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}', "text/plain", 415, "unsupported_media_type"),
        (b"nope", "application/json", 400, "invalid_payload"),
        (b'[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]', "application/json", 400, "invalid_payload"),
        (b'{"jsonrpc":"1.0","id":1,"method":"tools/list"}', "application/json", 400, "invalid_payload"),
        (b'{"jsonrpc":"2.0","id":1.5,"method":"tools/list"}', "application/json", 400, "invalid_payload"),
        (b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":"x"}', "application/json", 400, "invalid_payload"),
        (b'{"jsonrpc":"2.0","id":1}', "application/json", 400, "invalid_payload"),
        (
            b'{"jsonrpc":"2.0","id":1,"method":"' + b"x" * (1024 * 1024) + b'"}',
            "application/json",
            413,
            "payload_too_large",
        ),
    ],
)
def test_bodies_that_are_not_one_json_rpc_message(
    live: Live, body: bytes, content_type: str, status: int, code: str
) -> None:
    headers = {"Authorization": f"Bearer {live.shop.rk}", "Content-Type": content_type}
    answer = httpx.post(f"{live.url}/mcp", content=body, headers=headers, timeout=30)
    assert (answer.status_code, answer.json()["error"]) == (status, code)


def test_notifications_are_accepted_without_a_body(live: Live) -> None:
    headers = {"Authorization": f"Bearer {live.shop.rk}"}
    answer = httpx.post(
        f"{live.url}/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers, timeout=30
    )
    assert (answer.status_code, answer.content) == (202, b"")


def test_a_refused_key_fails_the_python_client(live: Live) -> None:
    async def connect() -> None:
        async with _client(live, live.shop.pk):
            pass

    with pytest.raises(Exception):
        _run(connect())


# ---- initialize and tools/list ------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_initialize(live: Live, mode: str) -> None:
    async def go() -> tuple[Any, Any]:
        async with _client(live, live.shop.rk, mode=mode) as client:
            return client.server_info, client.server_capabilities

    info, capabilities = _run(go())
    assert info is not None and info.name == "millimetric"
    assert capabilities.tools is not None and capabilities.resources is not None


def _tools(live: Live, token: str, path: str = "/mcp") -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        async with _client(live, token, path) as client:
            return {tool.name: tool for tool in (await client.list_tools()).tools}

    return _run(go())


def test_tools_list_per_key_kind(live: Live) -> None:
    read = _tools(live, live.shop.rk)
    secret = _tools(live, live.shop.sk)
    account = _tools(live, live.ak, "/mcp/account")
    assert set(read) >= READ_TOOLS and "track_event" not in read
    assert set(secret) == set(read) | {"track_event"}
    assert set(account) == set(read) | {"list_projects", "compare_projects"}
    # Schemas mirror the REST parameters.
    stats = read["get_stats"].input_schema
    assert stats["type"] == "object" and stats["required"] == ["from", "to"]
    assert set(stats["properties"]) == {
        *("from", "to", "metric", "group_by", "interval", "tz", "limit"),
        *("event", "source", "medium", "user_id", "anonymous_id", "country", "session_id"),
    }
    assert stats["properties"]["metric"]["enum"] == ["count", "uniques", "sessions", "users"]
    assert stats["properties"]["limit"]["maximum"] == 1000
    assert read["top_sources"].input_schema["properties"]["limit"]["maximum"] == 200
    assert secret["track_event"].input_schema["required"] == ["event"]
    assert secret["track_event"].input_schema["properties"]["event"]["maxLength"] == 128
    assert {"project_id", "project_slug", "project_ids"} <= set(account["get_stats"].input_schema["properties"])
    assert "project_id" not in read["get_stats"].input_schema["properties"]


# ---- every read tool equals its REST endpoint ---------------------------------------------------
EQUAL_CASES = [
    ("query_events", "/v1/query", {}),
    ("query_events", "/v1/query", {"event": "$pageview", "limit": 7}),
    ("query_events", "/v1/query", {"user_id": "u-1"}),
    ("get_stats", "/v1/stats", {}),
    ("get_stats", "/v1/stats", {"metric": "uniques", "group_by": "source,medium"}),
    ("get_stats", "/v1/stats", {"metric": "sessions", "interval": "hour", "tz": "Europe/Berlin"}),
    ("get_stats", "/v1/stats", {"group_by": "event_name", "source": "google", "limit": 2}),
    ("get_stats", "/v1/stats", {"metric": "uniques", "user_id": "u-1", "interval": "day"}),
    ("top_sources", "/v1/sources", {}),
    ("top_sources", "/v1/sources", {"breakdown": "source", "limit": 2}),
    ("funnel", "/v1/funnel", {"steps": "$pageview,signup,purchase"}),
    ("funnel", "/v1/funnel", {"steps": "$pageview,purchase,$pageview", "window": 600, "source": "google"}),
    ("funnel", "/v1/funnel", {"steps": "signup,purchase", "by": "user"}),
]


@pytest.mark.parametrize(("tool", "route", "arguments"), EQUAL_CASES)
def test_read_tools_equal_rest(live: Live, tool: str, route: str, arguments: dict[str, Any]) -> None:
    expected = _rest(live, route, live.shop.rk, {**WINDOW, **arguments})
    assert expected.get("rows") or expected["steps"][0]["count"], "the case should find rows"
    token = live.shop.sk if tool == "get_stats" else live.shop.rk  # both kinds read the same
    assert _run(_call(live, token, tool, {**WINDOW, **arguments})) == expected


def test_group_by_may_be_a_list(live: Live) -> None:
    expected = _rest(live, "/v1/stats", live.shop.rk, {**WINDOW, "group_by": "source,medium"})
    assert _run(_call(live, live.shop.rk, "get_stats", {**WINDOW, "group_by": ["source", "medium"]})) == expected


def test_funnel_steps_may_be_a_list(live: Live) -> None:
    expected = _rest(live, "/v1/funnel", live.shop.rk, {**WINDOW, "steps": "$pageview,signup", "by": "anonymous"})
    assert [step["count"] for step in expected["steps"]] == [7, 7]
    answer = _run(_call(live, live.shop.rk, "funnel", {**WINDOW, "steps": ["$pageview", "signup"]}))
    assert answer == expected


def test_top_pages_is_stats_by_path_of_pageviews(live: Live) -> None:
    expected = _rest(live, "/v1/stats", live.shop.rk, {**WINDOW, "group_by": "path", "event": "$pageview"})
    assert len(expected["rows"]) == 5
    assert _run(_call(live, live.shop.rk, "top_pages", WINDOW)) == expected
    uniques = _rest(
        live, "/v1/stats", live.shop.rk, {**WINDOW, "group_by": "path", "event": "signup", "metric": "uniques"}
    )
    answer = _run(_call(live, live.shop.rk, "top_pages", {**WINDOW, "event": "signup", "metric": "uniques"}))
    assert answer == uniques


def test_query_events_pages_like_rest(live: Live) -> None:
    first = _run(_call(live, live.shop.rk, "query_events", {**WINDOW, "limit": 25}))
    assert first["next_cursor"]
    second = _run(_call(live, live.shop.rk, "query_events", {**WINDOW, "limit": 25, "cursor": first["next_cursor"]}))
    rest = _rest(live, "/v1/query", live.shop.rk, {**WINDOW, "limit": 25, "cursor": first["next_cursor"]})
    assert second == rest
    seen = [row["event_id"] for row in first["rows"] + second["rows"]]
    assert len(seen) == len(set(seen)) == 50


# ---- track_event --------------------------------------------------------------------------------
def test_track_event_stores_an_event(live: Live) -> None:
    event_id = f"mcp-{uuid.uuid4().hex[:8]}"
    body = {
        "event": "mcp_signup",
        "event_id": event_id,
        "anonymous_id": "agent-1",
        "url": "https://shop.example.com/join?utm_source=newsletter&utm_medium=email",
        "properties": {"plan": "pro"},
    }
    assert _run(_call(live, live.shop.sk, "track_event", body)) == {"ok": True, "event_id": event_id}
    now = dt.datetime.now(dt.timezone.utc)
    window = {"from": (now - dt.timedelta(hours=1)).isoformat(), "to": (now + dt.timedelta(hours=1)).isoformat()}
    rows = _rest(live, "/v1/query", live.shop.rk, {**window, "event": "mcp_signup"})["rows"]
    assert [(r["event_id"], r["anonymous_id"], r["source"], r["medium"]) for r in rows] == [
        (event_id, "agent-1", "newsletter", "email")
    ]
    assert json.loads(rows[0]["properties"]) == {"plan": "pro"}
    # The blog project did not get it.
    assert _rest(live, "/v1/query", live.blog.rk, {**window, "event": "mcp_signup"})["rows"] == []


# ---- JSON-RPC errors ----------------------------------------------------------------------------
def test_unknown_tool_is_32602(live: Live) -> None:
    error = _run(_error(live, live.shop.rk, "drop_tables", {}))
    assert error.code == -32602 and "drop_tables" in error.message
    # Account tools exist only at /mcp/account.
    assert _run(_error(live, live.shop.sk, "list_projects", {})).code == -32602


def test_track_event_needs_a_secret_key(live: Live) -> None:
    for token, path in ((live.shop.rk, "/mcp"), (live.ak, "/mcp/account")):
        error = _run(_error(live, token, "track_event", {"event": "x"}, path))
        assert (error.code, error.data) == (-32000, {"error": "insufficient_scope"})


@pytest.mark.parametrize(
    ("tool", "arguments", "field"),
    [
        ("get_stats", {"to": "2030-01-01"}, "from"),
        ("get_stats", {**WINDOW, "limit": 0}, "limit"),
        ("get_stats", {**WINDOW, "limit": "10"}, "limit"),
        ("get_stats", {**WINDOW, "metric": "median"}, "metric"),
        ("get_stats", {**WINDOW, "bogus": 1}, "bogus"),
        ("get_stats", {**WINDOW, "group_by": ["password"]}, "group_by"),
        ("get_stats", {**WINDOW, "group_by": "source,password"}, "group_by"),  # refused by the REST layer
        ("get_stats", {"from": WINDOW["to"], "to": WINDOW["from"]}, "to"),
        ("get_stats", {**WINDOW, "tz": "Mars/Olympus"}, "tz"),
        ("query_events", {**WINDOW, "cursor": "forged"}, "cursor"),
        ("top_sources", {**WINDOW, "limit": 201}, "limit"),
        ("funnel", WINDOW, "steps"),
        ("funnel", {**WINDOW, "steps": ["signup"]}, "steps"),
        ("funnel", {**WINDOW, "steps": ",".join(["a"] * 11)}, "steps"),  # refused by the REST layer
        ("funnel", {**WINDOW, "steps": "a,b", "window": 0}, "window"),
        ("funnel", {**WINDOW, "steps": "a,b", "by": "session"}, "by"),
        ("track_event", {"properties": {}}, "event"),
        ("track_event", {"event": "$secret"}, "event"),
        ("track_event", {"event": "x", "url": "not a url"}, "url"),
    ],
)
def test_invalid_arguments_are_32602_with_field_errors(live: Live, tool: str, arguments: dict, field: str) -> None:
    error = _run(_error(live, live.shop.sk, tool, arguments))
    assert error.code == -32602
    assert field in error.data["fieldErrors"], error.data


# ---- resources ----------------------------------------------------------------------------------
def _resources(live: Live, token: str, path: str = "/mcp") -> tuple[set[str], dict[str, Any]]:
    async def go() -> tuple[set[str], dict[str, Any]]:
        async with _client(live, token, path) as client:
            listed = {str(r.uri) for r in (await client.list_resources()).resources}
            read = {uri: json.loads((await client.read_resource(uri)).contents[0].text) for uri in sorted(listed)}
            return listed, read

    return _run(go())


def test_resources_of_a_project(live: Live) -> None:
    listed, read = _resources(live, live.blog.rk)
    assert listed == {"events://recent", "schema://events"}
    now = dt.datetime.now(dt.timezone.utc)
    recent = {"from": "2000-01-01", "to": (now + dt.timedelta(hours=1)).isoformat()}
    assert read["events://recent"]["rows"] == _rest(live, "/v1/query", live.blog.rk, recent)["rows"]
    month = {"from": (now - dt.timedelta(days=30)).isoformat(), "to": recent["to"], "group_by": "event_name"}
    counts = {r["event_name"]: r["value"] for r in _rest(live, "/v1/stats", live.blog.rk, month)["rows"]}
    assert {e["event_name"]: e["count"] for e in read["schema://events"]["events"]} == counts
    assert counts == {"$pageview": 13, "signup": 6, "purchase": 6}

    async def projects_resource() -> MCPError:
        async with _client(live, live.blog.rk) as client:
            with pytest.raises(MCPError) as raised:
                await client.read_resource("projects://all")
        return raised.value

    assert _run(projects_resource()).code == -32602


# ---- /mcp/account across two projects -----------------------------------------------------------
def test_account_lists_its_projects_only(live: Live) -> None:
    answer = _run(_call(live, live.ak, "list_projects", {}, "/mcp/account"))
    assert {p["slug"] for p in answer["projects"]} == {"shop", "blog"}
    listed, read = _resources(live, live.ak, "/mcp/account")
    assert listed == {"events://recent", "schema://events", "projects://all"}
    assert read["projects://all"] == answer


def _strip(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k != "project_id"} for row in rows]


def test_account_reads_span_both_projects(live: Live) -> None:
    shop, blog = live.shop.project_id, live.blog.project_id
    answer = _run(_call(live, live.ak, "get_stats", {**WINDOW, "group_by": ["event_name"]}, "/mcp/account"))
    for project_id in (shop, blog):
        rest = _rest(live, "/v1/stats", live.ak, {**WINDOW, "group_by": "event_name", "project_id": project_id})
        mine = [row for row in answer["rows"] if row["project_id"] == project_id]
        assert _strip(mine) == rest["rows"]
    # One project, by id or by slug: the REST answer with project_id on every row.
    rest = _rest(live, "/v1/sources", live.ak, {**WINDOW, "project_id": blog})
    for selection in ({"project_id": blog}, {"project_slug": "blog"}, {"project_ids": ["blog"]}):
        answer = _run(_call(live, live.ak, "top_sources", {**WINDOW, **selection}, "/mcp/account"))
        assert {row["project_id"] for row in answer["rows"]} == {blog}
        assert _strip(answer["rows"]) == rest["rows"]
    # Raw rows of both, newest first.
    rows = _run(_call(live, live.ak, "query_events", {**WINDOW, "limit": 1000}, "/mcp/account"))["rows"]
    assert len(rows) == 85 and {row["project_id"] for row in rows} == {shop, blog}
    assert [r["timestamp"] for r in rows] == sorted((r["timestamp"] for r in rows), reverse=True)


def test_account_funnel_per_project(live: Live) -> None:
    query = {**WINDOW, "steps": "$pageview,signup,purchase"}
    answer = _run(_call(live, live.ak, "funnel", query, "/mcp/account"))
    assert answer["by"] == "anonymous"
    assert {row["project_id"] for row in answer["rows"]} == {live.shop.project_id, live.blog.project_id}
    for row in answer["rows"]:
        rest = _rest(live, "/v1/funnel", live.ak, {**query, "project_id": row["project_id"]})
        assert {"by": answer["by"], "steps": row["steps"]} == rest


def test_compare_projects_ranks_them(live: Live) -> None:
    answer = _run(_call(live, live.ak, "compare_projects", WINDOW, "/mcp/account"))
    assert [(row["slug"], row["value"]) for row in answer["rows"]] == [("shop", 60), ("blog", 25)]
    uniques = _run(_call(live, live.ak, "compare_projects", {**WINDOW, "metric": "uniques"}, "/mcp/account"))
    expected = {
        slug: _rest(live, "/v1/stats", live.ak, {**WINDOW, "metric": "uniques", "project_id": slug})["rows"][0]["value"]
        for slug in ("shop", "blog")
    }
    assert {row["slug"]: row["value"] for row in uniques["rows"]} == expected


def test_unknown_or_foreign_project_is_32004(live: Live) -> None:
    for selection in (
        {"project_id": str(uuid.uuid4())},
        {"project_id": live.foreign_project_id},
        {"project_slug": "elsewhere"},
        {"project_ids": ["shop", "nope"]},
    ):
        error = _run(_error(live, live.ak, "get_stats", {**WINDOW, **selection}, "/mcp/account"))
        assert error.code == -32004, selection


# ---- several worker processes, and track_event's rate limit -------------------------------------
REDIS_URL = "redis://127.0.0.1:6379/0"


def test_two_workers_and_the_track_rate_limit(server_factory: Any, tmp_path: Path) -> None:
    """Each worker process runs its own session manager, answers MCP and stops cleanly;
    `track_event` takes its token from the project's `/v1/track` bucket (shared by the workers
    through Redis), and an empty bucket is JSON-RPC -32000 `rate_limited`."""
    data_dir = tmp_path / "data"
    keys = cli_project(data_dir, "limited")
    cli("projects", "limits", "limited", "/v1/track", "0.001", "2", data_dir=data_dir)
    prefix = f"mm-test-mcp-{uuid.uuid4().hex[:8]}:"
    env = {
        "MILLIMETRIC_WORKERS": "2",
        "MILLIMETRIC_RATE_LIMITS": "on",
        "MILLIMETRIC_REDIS_URL": REDIS_URL,
        "MILLIMETRIC_REDIS_PREFIX": prefix,
    }
    server = server_factory(data_dir, env=env)
    live = Live(server.url, keys, keys, "", "")

    async def track(n: int) -> Any:
        async with _client(live, keys.sk) as client:  # a new connection each time
            try:
                return (await client.call_tool("track_event", {"event": "x", "event_id": str(n)})).structured_content
            except MCPError as error:
                return error.code, error.data

    try:
        answers = [_run(track(n)) for n in range(3)]
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
    assert answers[:2] == [{"ok": True, "event_id": "0"}, {"ok": True, "event_id": "1"}]
    code, data = answers[2]
    assert code == -32000 and data["error"] == "rate_limited" and data["retry_after_s"] >= 1
    # The session managers stop with their workers.
    assert server.stop() == 0
    assert "Traceback" not in server.log_path.read_text()
