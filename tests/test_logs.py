"""Log lines: one per request with its request id, JSON on demand, and never a client address,
a key secret or a request body, whatever a client sends."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest

from millimetric.operations import logs

from conftest import bearer, cli_project

BODY_MARKER = "body-marker-5be1c0de"
CLIENT_IP = "198.51.100.23"
CONTEXT_IP = "203.0.113.77"


def test_key_secrets_are_cut_from_any_line() -> None:
    line = "token sk_live_0123abcd_S3cretS3cret-_x and pk_test_89abcdef_another one"
    assert logs.redact(line) == "token sk_live_0123abcd_[redacted] and pk_test_89abcdef_[redacted] one"
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "key %s", ("rk_live_0123abcd_zzz",), None)
    assert "zzz" not in logs.TextFormatter().format(record)
    assert json.loads(logs.JsonFormatter().format(record))["message"] == "key rk_live_0123abcd_[redacted]"


@pytest.mark.slow
def test_a_server_logs_json_lines_without_addresses_secrets_or_bodies(server_factory, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    keys = cli_project(data_dir)
    env = {
        "MILLIMETRIC_LOG_FORMAT": "json",
        "MILLIMETRIC_LOG_LEVEL": "info",
        "MILLIMETRIC_TRUSTED_PROXIES": "127.0.0.1/32",  # X-Forwarded-For names the client
    }
    server = server_factory(data_dir, env=env)
    forwarded = {"X-Forwarded-For": CLIENT_IP, "User-Agent": f"agent-{BODY_MARKER}"}
    secret = keys.sk.rsplit("_", 1)[1]
    wrong_secret = keys.sk[: keys.sk.rindex("_") + 1] + "wrongwrongwrongwrongwrong"
    event = {
        "event": "signup",
        "anonymous_id": f"anon-{BODY_MARKER}",
        "properties": {"note": BODY_MARKER, "key": keys.sk},
        "context": {"ip": CONTEXT_IP},
    }
    ids = []
    with httpx.Client(base_url=server.url, timeout=30) as client:
        requests = [
            ("POST", "/v1/track", event, bearer(keys.sk, **forwarded)),
            ("POST", "/v1/batch", {"events": [event, event]}, bearer(keys.sk, **forwarded)),
            ("POST", "/v1/track", event, bearer(wrong_secret, **forwarded)),  # 401
            ("POST", "/v1/track", {"event": BODY_MARKER * 3, "anonymous_id": 5}, bearer(keys.sk, **forwarded)),  # 400
            ("POST", f"/v1/{keys.sk}", None, forwarded),  # 404, the key in the path
            ("GET", "/v1/query?from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z", None, bearer(keys.rk, **forwarded)),
        ]
        for method, path, body, headers in requests:
            response = client.request(method, path, json=body, headers=headers)
            ids.append(response.headers["x-request-id"])
    assert server.stop() in (0, -15)
    text = server.log_path.read_text()
    lines = [json.loads(line) for line in text.splitlines()]  # every line is JSON
    access = [line for line in lines if line["logger"] == "millimetric.access"]
    assert [line["request_id"] for line in access if line["request_id"] in ids] == ids  # one line each
    by_id = {line["request_id"]: line for line in access}
    assert [by_id[i]["status"] for i in ids] == [202, 202, 401, 400, 404, 200]
    assert by_id[ids[0]]["route"] == "/v1/track" and by_id[ids[4]]["route"] == "unmatched"
    for forbidden in (secret, wrong_secret.rsplit("_", 1)[1], BODY_MARKER, CLIENT_IP, CONTEXT_IP):
        assert forbidden not in text, forbidden
