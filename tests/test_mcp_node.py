"""The MCP server through the official TypeScript client (`@modelcontextprotocol/sdk` from npm,
pinned in `tests/node-mcp/package-lock.json`) against a real server process: initialize,
tools/list, tools/call of every tool with answers equal to the REST endpoints', `track_event`
storing an event, JSON-RPC errors, resources, and an account key across two projects."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import httpx
import pytest

from conftest import Keys, ServerProcess, bearer, cli, cli_project

pytestmark = pytest.mark.slow  # a real server process and Node.js

PACKAGE = Path(__file__).parent / "node-mcp"
START = dt.datetime.now(dt.timezone.utc).replace(microsecond=0, second=0, minute=0) - dt.timedelta(hours=4)
WINDOW = {"from": START.isoformat(), "to": (START + dt.timedelta(hours=3)).isoformat()}


class Live(NamedTuple):
    url: str
    shop: Keys
    blog: Keys
    ak: str


def _installed_version() -> str | None:
    manifest = PACKAGE / "node_modules" / "@modelcontextprotocol" / "sdk" / "package.json"
    return json.loads(manifest.read_text())["version"] if manifest.exists() else None


@pytest.fixture(scope="module")
def node_client() -> Path:
    """The client script, with the locked SDK installed (`npm ci`, once)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("Node.js and npm are needed for the TypeScript MCP client")
    locked = json.loads((PACKAGE / "package-lock.json").read_text())
    wanted = locked["packages"]["node_modules/@modelcontextprotocol/sdk"]["version"]
    if _installed_version() != wanted:
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=PACKAGE, check=True, capture_output=True, timeout=600
        )
    assert _installed_version() == wanted
    return PACKAGE / "client.mjs"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, node_client: Path) -> Iterator[Live]:
    data_dir = tmp_path_factory.mktemp("mcp-node") / "data"
    shop, blog = cli_project(data_dir, "shop"), cli_project(data_dir, "blog")
    ak = json.loads(cli("keys", "create", "shop", "--kind", "ak", "--json", data_dir=data_dir).stdout)["key"]
    server = ServerProcess(data_dir).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for keys, n in ((shop, 30), (blog, 12)):
                events = [
                    {
                        "event": ["$pageview", "signup", "purchase"][i % 3],
                        "anonymous_id": f"{keys.slug}-{i % 4}",
                        "timestamp": (START + dt.timedelta(minutes=5 * i)).isoformat(),
                        "path": f"/p/{i % 3}",
                        "url": f"https://{keys.slug}.example.com/?utm_source={'ads' if i % 2 else 'mail'}",
                    }
                    for i in range(n)
                ]
                assert client.post("/v1/batch", json={"events": events}, headers=bearer(keys.sk)).status_code == 202
        yield Live(server.url, shop, blog, ak)
    finally:
        server.kill()


def _node(script: Path, url: str, token: str, calls: list[dict] = (), resources: list[str] = ()) -> dict[str, Any]:
    plan = {"url": url, "token": token, "calls": list(calls), "resources": list(resources)}
    done = subprocess.run(["node", str(script), json.dumps(plan)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _rest(live: Live, route: str, token: str, query: dict[str, Any]) -> dict[str, Any]:
    answer = httpx.get(f"{live.url}{route}", params=query, headers=bearer(token), timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


CASES = [
    ("query_events", "/v1/query", {"limit": 5}),
    ("get_stats", "/v1/stats", {"group_by": "event_name,source", "metric": "uniques"}),
    ("top_sources", "/v1/sources", {"breakdown": "source"}),
    ("top_pages", "/v1/stats", {}),
    ("funnel", "/v1/funnel", {"steps": "$pageview,signup,purchase", "window": 900}),
]


def test_read_key_every_read_tool_equals_rest(live: Live, node_client: Path) -> None:
    calls = [{"tool": tool, "arguments": {**WINDOW, **arguments}} for tool, _, arguments in CASES]
    out = _node(node_client, f"{live.url}/mcp", live.shop.rk, calls)
    assert out["serverInfo"]["name"] == "millimetric"
    assert set(out["tools"]) == {"query_events", "get_stats", "top_sources", "top_pages", "funnel"}
    for (tool, route, arguments), answer in zip(CASES, out["calls"]):
        query = {**WINDOW, **arguments, **({"group_by": "path", "event": "$pageview"} if tool == "top_pages" else {})}
        expected = _rest(live, route, live.shop.rk, query)
        assert answer["structuredContent"] == expected, tool
        assert json.loads(answer["text"]) == expected


def test_errors_reach_the_typescript_client(live: Live, node_client: Path) -> None:
    calls = [
        {"tool": "drop_tables", "arguments": {}},
        {"tool": "track_event", "arguments": {"event": "x"}},
        {"tool": "get_stats", "arguments": {**WINDOW, "limit": 5000}},
        {"tool": "get_stats", "arguments": {"from": WINDOW["to"], "to": WINDOW["from"]}},
    ]
    out = _node(node_client, f"{live.url}/mcp", live.shop.rk, calls)
    codes = [answer["error"]["code"] for answer in out["calls"]]
    assert codes == [-32602, -32000, -32602, -32602]
    assert "limit" in out["calls"][2]["error"]["data"]["fieldErrors"]
    assert "to" in out["calls"][3]["error"]["data"]["fieldErrors"]
    refused = _node(node_client, f"{live.url}/mcp", live.shop.pk)
    assert "connect" in refused  # 403 key_kind_not_allowed: the client cannot even initialize


def test_secret_key_tracks_an_event(live: Live, node_client: Path) -> None:
    body = {"event": "node_signup", "event_id": "node-1", "anonymous_id": "ts-client"}
    out = _node(node_client, f"{live.url}/mcp", live.blog.sk, [{"tool": "track_event", "arguments": body}])
    assert "track_event" in out["tools"]
    assert out["calls"] == [
        {
            "text": '{"ok":true,"event_id":"node-1"}',
            "structuredContent": {"ok": True, "event_id": "node-1"},
            "isError": False,
        }
    ]
    now = dt.datetime.now(dt.timezone.utc)
    window = {"from": (now - dt.timedelta(hours=1)).isoformat(), "to": (now + dt.timedelta(hours=1)).isoformat()}
    rows = _rest(live, "/v1/query", live.blog.rk, {**window, "event": "node_signup"})["rows"]
    assert [(row["event_id"], row["anonymous_id"]) for row in rows] == [("node-1", "ts-client")]


def test_account_key_across_two_projects(live: Live, node_client: Path) -> None:
    calls = [
        {"tool": "list_projects", "arguments": {}},
        {"tool": "compare_projects", "arguments": WINDOW},
        {"tool": "get_stats", "arguments": {**WINDOW, "project_slug": "blog", "group_by": ["event_name"]}},
    ]
    out = _node(node_client, f"{live.url}/mcp/account", live.ak, calls, ["projects://all", "schema://events"])
    assert {"list_projects", "compare_projects"} <= set(out["tools"])
    listed, compared, stats = (answer["structuredContent"] for answer in out["calls"])
    assert {p["slug"] for p in listed["projects"]} == {"shop", "blog"}
    assert [(row["slug"], row["value"]) for row in compared["rows"]] == [("shop", 30), ("blog", 12)]
    rest = _rest(live, "/v1/stats", live.ak, {**WINDOW, "project_id": "blog", "group_by": "event_name"})
    assert [{k: v for k, v in row.items() if k != "project_id"} for row in stats["rows"]] == rest["rows"]
    assert out["resources"]["projects://all"] == listed
    counts = {e["event_name"]: e["count"] for e in out["resources"]["schema://events"]["events"]}
    assert counts["$pageview"] == 10 + 4
