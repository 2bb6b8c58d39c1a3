"""Events come out of the pipeline enriched: attribution, device, country, visitor hash, bots."""

import re
import subprocess

import httpx

from millimetric.ingest import pipeline
from millimetric.store.control import ProjectChanges

from conftest import bearer, cli, cli_project, stored_events

CHROME_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Mobile/15E148 Safari/604.1"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
LEAKY_IP = "203.0.113.77"


def test_the_pipeline_reads_as_a_named_list_of_steps():
    assert [step.__name__ for step in pipeline.STEPS] == [
        "drop_forgotten",
        "put_user_agent",
        "drop_bots",
        "put_ip_hash",
        "derive_ids",
        "put_source",
        "put_country",
    ]


def test_track_is_enriched_from_the_request(client, keys):
    body = {
        "event": "$pageview",
        "url": "https://shop.example.com/?fbclid=abc&utm_campaign=spring",
        "referrer": "https://l.facebook.com/",
    }
    r = client.post("/v1/track", json=body, headers=bearer(keys.sk, **{"User-Agent": IPHONE}))
    assert r.status_code == 202
    [row] = stored_events(client)
    assert (row["source"], row["medium"], row["campaign"], row["source_confidence"], row["source_rule_id"]) == (
        "facebook",
        "paid",
        "spring",
        "high",
        "fb_ad_redirect",
    )
    assert (row["device_type"], row["browser"], row["os"]) == ("mobile", "safari", "ios")
    assert re.fullmatch(r"[0-9a-f]{32}", row["ip_hash"])
    assert row["anonymous_id"] == row["ip_hash"]  # no anonymous_id sent: uniques still work


def test_server_side_senders_forward_their_visitors_details(client, keys):
    body = {"event": "x", "context": {"ip": "8.8.8.8", "user_agent": CHROME_MAC}}
    client.post("/v1/track", json=body, headers=bearer(keys.sk, **{"User-Agent": "python-requests/2.32"}))
    client.post("/v1/track", json=body, headers=bearer(keys.pk, Origin="https://shop.example.com"))
    sk_row, pk_row = stored_events(client)
    assert (sk_row["country"], sk_row["browser"], sk_row["os"]) == ("US", "chrome", "macos")
    assert pk_row["country"] == "" and pk_row["browser"] != "chrome"  # context is ignored for pk_


def test_internal_and_direct_hits(client, keys):
    events = [
        {"event": "a", "url": "https://shop.example.com/b", "referrer": "https://shop.example.com/a"},
        {"event": "b", "url": "https://shop.example.com/"},
    ]
    client.post("/v1/batch", json={"events": events}, headers=bearer(keys.sk))
    assert [(r["source"], r["medium"]) for r in stored_events(client)] == [
        ("internal", "internal"),
        ("direct", "direct"),
    ]


def test_bots_are_dropped_and_counted_unless_the_project_keeps_them(client, keys):
    headers = bearer(keys.sk, **{"User-Agent": GOOGLEBOT})
    assert client.post("/v1/track", json={"event": "crawl"}, headers=headers).status_code == 202
    assert stored_events(client) == []
    services = client.app.state.services
    services.flush_counters()
    assert services.control.dropped_counts(keys.project_id) == {"bot": 1}
    services.control.update_project(keys.project_id, ProjectChanges(keep_bots=True))
    services.keys.invalidate()  # the setting travels with the cached key's project
    client.post("/v1/track", json={"event": "crawl"}, headers=headers)
    assert [r["device_type"] for r in stored_events(client)] == ["bot"]
    plain = bearer(keys.sk, **{"User-Agent": "curl/8.5.0"})
    client.post("/v1/track", json={"event": "server"}, headers=plain)
    assert stored_events(client, "event_name = 'server'")[0]["device_type"] != "bot"


def test_trusted_cf_country_header(tmp_path):
    from starlette.testclient import TestClient

    from millimetric.api.app import create_app

    from conftest import create_project, make_settings

    for trust, expected in ((True, "DE"), (False, "")):
        with TestClient(create_app(make_settings(tmp_path / str(trust), trust_cf_headers=trust))) as client:
            keys = create_project(client)
            client.post("/v1/track", json={"event": "x"}, headers=bearer(keys.sk, **{"CF-IPCountry": "de"}))
            assert stored_events(client)[0]["country"] == expected


def test_the_raw_ip_is_never_written(server_factory, tmp_path):
    """Events from 203.0.113.77 via a trusted proxy, debug logging: the address is nowhere."""
    data_dir = tmp_path / "data"
    keys = cli_project(data_dir)
    env = {"MILLIMETRIC_TRUSTED_PROXIES": "127.0.0.0/8", "MILLIMETRIC_LOG_LEVEL": "debug"}
    server = server_factory(data_dir, env=env)
    headers = bearer(keys.sk, **{"X-Forwarded-For": f"{LEAKY_IP}, 127.0.0.1", "User-Agent": CHROME_MAC})
    for i in range(20):
        assert (
            httpx.post(f"{server.url}/v1/track", json={"event": "x", "event_id": str(i)}, headers=headers).status_code
            == 202
        )
    events = [{"event": "y", "url": "https://shop.example.com/?gclid=1"}] * 50
    assert httpx.post(f"{server.url}/v1/batch", json={"events": events}, headers=headers).status_code == 202
    bad = httpx.post(f"{server.url}/v1/track", content=b"{oops", headers=headers)
    assert bad.status_code == 400
    httpx.post(f"{server.url}/v1/identify", json={"anonymous_id": "a", "user_id": "u"}, headers=headers)
    server.stop()
    cli("projects", "list", data_dir=data_dir)
    hits = subprocess.run(
        ["grep", "-rl", "--binary-files=text", LEAKY_IP, str(data_dir)], capture_output=True, text=True
    )
    assert hits.stdout == "", f"raw IP found in {hits.stdout}"
    assert LEAKY_IP not in server.log_path.read_text()
    assert "DEBUG" in server.log_path.read_text() or "debug" in server.log_path.read_text().lower()


def test_enrichment_can_be_switched_off(tmp_path):
    from starlette.testclient import TestClient

    from millimetric.api.app import create_app

    from conftest import create_project, make_settings

    with TestClient(create_app(make_settings(tmp_path, enrich=False))) as client:
        keys = create_project(client)
        body = {"event": "x", "url": "https://shop.example.com/?gclid=1", "anonymous_id": "a"}
        client.post("/v1/track", json=body, headers=bearer(keys.sk, **{"User-Agent": IPHONE}))
        [row] = stored_events(client)
        assert (row["source"], row["device_type"], row["ip_hash"]) == ("", "", "")
        assert row["session_id"].startswith("a-")
