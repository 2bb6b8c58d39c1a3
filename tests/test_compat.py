"""Segment- and PostHog-compatible ingest, driven by the vendors' own client libraries against a
real server process (only their host changed), and read back through `/v1/query`."""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import httpx
import pytest

from conftest import ORIGIN, Keys, ServerProcess, bearer, cli_project

pytestmark = pytest.mark.slow  # real server processes or long waits: `-m "not slow"` skips them

NODE_DIR = Path(__file__).parent / "node"
DEADLINE_S = 60.0


class Live(NamedTuple):
    server: ServerProcess
    keys: Keys


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    data_dir = tmp_path_factory.mktemp("compat") / "data"
    keys = cli_project(data_dir)
    server = ServerProcess(data_dir).start()
    try:
        yield Live(server, keys)
    finally:
        server.kill()


def rows(live: Live, **params: str) -> list[dict[str, Any]]:
    now = dt.datetime.now(dt.timezone.utc)
    window = {"from": (now - dt.timedelta(days=2)).isoformat(), "to": (now + dt.timedelta(hours=2)).isoformat()}
    r = httpx.get(
        f"{live.server.url}/v1/query", params={**window, "limit": "1000", **params}, headers=bearer(live.keys.rk)
    )
    assert r.status_code == 200, r.text
    return r.json()["rows"]


def wait_for(live: Live, ids: set[str], **params: str) -> dict[str, dict[str, Any]]:
    """The stored rows with these event ids, once all of them are there (libraries send in the background)."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        found = {row["event_id"]: row for row in rows(live, **params) if row["event_id"] in ids}
        if set(found) == ids or time.monotonic() > deadline:
            assert set(found) == ids, f"missing {ids - set(found)}"
            return found
        time.sleep(0.2)


def props(row: dict[str, Any]) -> dict[str, Any]:
    value = row["properties"]
    return json.loads(value) if isinstance(value, str) else value


# Segment --------------------------------------------------------------------------------------
@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("root", ["/segment", ""], ids=["segment-host", "root-host"])
def test_segment_python_library(live: Live, compressed: bool, root: str) -> None:
    """segment-analytics-python with its host set to this server (`/segment`, or the root, where
    it posts to `/v1/batch` with Basic credentials), with and without gzip."""
    from segment.analytics import Client

    run = uuid.uuid4().hex[:8]
    errors: list[Exception] = []
    client = Client(
        live.keys.sk,
        host=f"{live.server.url}{root}",
        gzip=compressed,
        max_retries=0,
        on_error=lambda error, _batch: errors.append(error),
    )
    sent_at = dt.datetime.now(dt.timezone.utc)
    ids = {f"{run}-{kind}" for kind in ("track", "page", "screen", "identify", "group", "alias")}
    client.track(
        user_id="u-py",
        event="Order Completed",
        properties={"total": 42},
        message_id=f"{run}-track",
        context={
            "campaign": {"source": "newsletter", "medium": "email", "name": "spring"},
            "page": {"url": "https://shop.example.com/cart"},
        },
        timestamp=sent_at - dt.timedelta(minutes=5),
    )
    client.page(
        anonymous_id="anon-py",
        name="Pricing",
        properties={"url": "https://shop.example.com/pricing?plan=pro", "referrer": "https://www.google.com/"},
        message_id=f"{run}-page",
    )
    client.screen(user_id="u-py", name="Settings", message_id=f"{run}-screen")
    client.identify(user_id="u-py", anonymous_id="anon-py", traits={"plan": "pro"}, message_id=f"{run}-identify")
    client.group(user_id="u-py", group_id="acme", traits={"seats": 3}, message_id=f"{run}-group")
    client.alias(previous_id="anon-py", user_id="u-py", message_id=f"{run}-alias")
    client.flush()
    client.join()
    assert errors == []

    found = wait_for(live, ids)
    names = {event_id.rsplit("-", 1)[1]: row["event_name"] for event_id, row in found.items()}
    assert names == {
        "track": "Order Completed",
        "page": "$pageview",
        "screen": "$screen",
        "identify": "$identify",
        "group": "$group",
        "alias": "$alias",
    }
    track = found[f"{run}-track"]
    assert (track["user_id"], props(track)) == ("u-py", {"total": 42})
    # context.campaign tags the page URL (the classifier reads campaigns from URLs)
    assert (track["source"], track["medium"], track["campaign"]) == ("newsletter", "email", "spring")
    assert (track["url"], track["path"]) == (
        "https://shop.example.com/cart?utm_campaign=spring&utm_source=newsletter&utm_medium=email",
        "/cart",
    )
    # Stamped five minutes before it was sent: so it happened about five minutes before receipt.
    happened = dt.datetime.fromisoformat(track["timestamp"].replace("Z", "+00:00"))
    assert abs((sent_at - dt.timedelta(minutes=5)) - happened) < dt.timedelta(seconds=30)
    page = found[f"{run}-page"]
    assert (page["url"], page["path"], page["referrer"]) == (
        "https://shop.example.com/pricing?plan=pro",
        "/pricing",
        "https://www.google.com/",
    )
    assert (page["anonymous_id"], props(page)["name"]) == ("anon-py", "Pricing")
    identify = found[f"{run}-identify"]
    assert (identify["anonymous_id"], identify["user_id"], props(identify)) == ("anon-py", "u-py", {"plan": "pro"})
    assert props(found[f"{run}-group"]) == {"groupId": "acme", "traits": {"seats": 3}}
    assert props(found[f"{run}-alias"]) == {"previousId": "anon-py"}


@pytest.fixture(scope="module")
def node_packages() -> Path:
    """tests/node with its locked packages installed (`npm ci`, once)."""
    if shutil.which("npm") is None or shutil.which("node") is None:
        pytest.skip("Node.js and npm are needed for @segment/analytics-node")
    if not (NODE_DIR / "node_modules" / "@segment" / "analytics-node").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, capture_output=True)
    return NODE_DIR


def test_segment_node_library(live: Live, node_packages: Path) -> None:
    """@segment/analytics-node (from tests/node, installed with `npm ci`) with its host set."""
    run = uuid.uuid4().hex[:8]
    done = subprocess.run(
        ["node", "segment.mjs", f"{live.server.url}/segment", live.keys.sk, run],
        cwd=node_packages,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    kinds = ("track", "page", "screen", "identify", "group", "alias")
    found = wait_for(live, {f"{run}-{kind}" for kind in kinds})
    assert [found[f"{run}-{kind}"]["event_name"] for kind in kinds] == [
        "Node Order",
        "$pageview",
        "$screen",
        "$identify",
        "$group",
        "$alias",
    ]
    assert props(found[f"{run}-track"]) == {"total": 5}
    assert found[f"{run}-track"]["anonymous_id"] == "node-anon"
    assert found[f"{run}-page"]["path"] == "/home"
    assert props(found[f"{run}-identify"]) == {"plan": "pro"}


def test_segment_http_api_keys_limits_and_errors(live: Live) -> None:
    url = f"{live.server.url}/segment/v1"
    basic = {"Authorization": "Basic " + base64.b64encode(f"{live.keys.sk}:".encode()).decode()}
    run = uuid.uuid4().hex[:8]
    with httpx.Client(timeout=10) as client:
        # write key in the body, a single-call route
        r = client.post(f"{url}/track", json={"event": "e", "messageId": f"{run}-1", "writeKey": live.keys.sk})
        assert (r.status_code, r.json()) == (200, {"success": True})
        # a pk_ key needs an allowed Origin
        body = {"event": "e", "messageId": f"{run}-2", "writeKey": live.keys.pk}
        assert client.post(f"{url}/track", json=body).json()["error"] == "origin_not_allowed"
        assert client.post(f"{url}/track", json=body, headers={"Origin": ORIGIN}).status_code == 200
        # no key; a read key
        assert client.post(f"{url}/track", json={"event": "e"}).status_code == 401
        rk = {"Authorization": "Basic " + base64.b64encode(f"{live.keys.rk}:".encode()).decode()}
        assert client.post(f"{url}/track", json={"event": "e"}, headers=rk).json()["error"] == "insufficient_scope"
        # invalid bodies are 400 before any key check
        r = client.post(f"{url}/track", json={"properties": {}})
        assert (r.status_code, r.json()["details"]["fieldErrors"]) == (400, {"event": ["Required"]})
        r = client.post(
            f"{url}/batch", json={"batch": [{"type": "track", "event": "ok"}, {"type": "nope"}]}, headers=basic
        )
        assert r.status_code == 400 and list(r.json()["details"]["fieldErrors"]) == ["batch.1.type"]
        # Segment's limits: 32 KB per message, 500 KB per batch
        big = {"type": "track", "event": "big", "properties": {"x": "y" * 33_000}}
        r = client.post(f"{url}/batch", json={"batch": [big]}, headers=basic)
        assert r.status_code == 400 and "batch.0" in r.json()["details"]["fieldErrors"]
        many = [{"type": "track", "event": "e", "properties": {"x": "y" * 6000}} for _ in range(90)]
        assert client.post(f"{url}/batch", json={"batch": many}, headers=basic).status_code == 413
        # gzip: a valid body, and bytes that are not gzip
        zipped = gzip.compress(
            json.dumps({"batch": [{"type": "track", "event": "z", "messageId": f"{run}-3"}]}).encode()
        )
        headers = {**basic, "Content-Type": "application/json", "Content-Encoding": "gzip"}
        assert client.post(f"{url}/batch", content=zipped, headers=headers).status_code == 200
        assert client.post(f"{url}/batch", content=b"not gzip", headers=headers).status_code == 400
    wait_for(live, {f"{run}-1", f"{run}-2", f"{run}-3"})


# PostHog --------------------------------------------------------------------------------------
def test_posthog_python_library(live: Live) -> None:
    """posthog (Python) with its host set to `http://HOST/posthog`."""
    from posthog import Posthog

    run = uuid.uuid4()
    ids = [str(uuid.UUID(int=run.int + i)) for i in range(4)]
    errors: list[Exception] = []
    client = Posthog(
        live.keys.sk,
        host=f"{live.server.url}/posthog",
        sync_mode=True,
        max_retries=0,
        on_error=lambda e, _: errors.append(e),
    )
    client.capture(
        "Signed Up",
        distinct_id="ph-user",
        properties={"plan": "pro", "$current_url": "https://shop.example.com/signup?utm_source=ads&utm_medium=cpc"},
        uuid=ids[0],
    )
    client.capture(
        "$pageview",
        distinct_id="ph-anon",
        properties={
            "$current_url": "https://shop.example.com/docs/x",
            "$referrer": "$direct",
            "$process_person_profile": False,
        },
        uuid=ids[1],
    )
    client.capture("$feature_flag_called", distinct_id="ph-user", uuid=ids[2])  # PostHog's own: not stored
    client.set(distinct_id="ph-user", properties={"email_domain": "example.com"}, uuid=ids[3])  # $set: not stored
    client.flush()
    client.shutdown()
    assert errors == []
    found = wait_for(live, set(ids[:2]))
    signup, pageview = found[ids[0]], found[ids[1]]
    assert (signup["event_name"], signup["user_id"], signup["anonymous_id"]) == ("Signed Up", "ph-user", "ph-user")
    assert props(signup)["plan"] == "pro" and "$current_url" not in props(signup)
    assert (signup["source"], signup["medium"], signup["path"]) == ("ads", "paid", "/signup")  # cpc is paid
    assert (pageview["event_name"], pageview["user_id"], pageview["anonymous_id"]) == ("$pageview", None, "ph-anon")
    assert (pageview["path"], pageview["referrer"]) == ("/docs/x", None)
    assert not {row["event_id"] for row in rows(live)} & set(ids[2:])


def test_posthog_capture_routes(live: Live) -> None:
    url = f"{live.server.url}/posthog"
    run = uuid.uuid4().hex[:8]
    with httpx.Client(timeout=10) as client:
        one = {"api_key": live.keys.sk, "event": "c", "distinct_id": "d", "uuid": f"{run}-c"}
        assert (client.post(f"{url}/capture/", json=one).json()) == {"status": 1}
        token = {"event": "e", "distinct_id": "d", "uuid": f"{run}-e", "properties": {"token": live.keys.sk}}
        assert client.post(f"{url}/e/", json=[token]).status_code == 200
        batch = {"api_key": live.keys.sk, "batch": [{"event": "b", "distinct_id": "d", "uuid": f"{run}-b"}]}
        zipped = gzip.compress(json.dumps(batch).encode())
        headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
        assert client.post(f"{url}/e/", content=zipped, headers=headers).status_code == 200
        # a body that is none of the shapes: 400 before the key is looked at
        assert client.post(f"{url}/e/", json={"batch": "x", "api_key": "nope"}).status_code == 400
        assert client.post(f"{url}/capture/", json={"distinct_id": "d", "api_key": "nope"}).status_code == 400
        assert client.post(f"{url}/capture/", json={"event": "x", "api_key": "nope"}).status_code == 401
    found = wait_for(live, {f"{run}-c", f"{run}-e", f"{run}-b"})
    assert {row["event_name"] for row in found.values()} == {"c", "e", "b"}
