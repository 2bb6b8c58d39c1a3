"""CORS: preflight and actual responses for browser callers."""

import pytest

from conftest import bearer

ORIGIN = "https://shop.example.com"


@pytest.mark.parametrize("path", ["/v1/track", "/v1/batch", "/v1/stats", "/mcp", "/admin/projects"])
def test_preflight(client, path):
    r = client.options(
        path,
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in r.headers["access-control-allow-methods"]
    assert r.headers["access-control-allow-headers"] == (
        "Authorization, Content-Type, Mcp-Protocol-Version, Mcp-Session-Id"
    )
    assert int(r.headers["access-control-max-age"]) > 0
    assert "access-control-allow-credentials" not in r.headers
    assert r.headers["x-request-id"]


def test_actual_responses_carry_the_origin_even_on_errors(client, keys):
    ok = client.post("/v1/track", json={"event": "x"}, headers=bearer(keys.pk, Origin=ORIGIN))
    denied = client.post("/v1/track", json={"event": "x"}, headers=bearer(keys.pk, Origin="https://evil.example"))
    for response, origin in ((ok, ORIGIN), (denied, "https://evil.example")):
        assert response.headers["access-control-allow-origin"] == origin
        assert response.headers["vary"] == "Origin"
    assert denied.status_code == 403  # CORS lets the browser read the refusal; the key decides


def test_no_cors_outside_the_api_or_without_origin(client, keys):
    assert "access-control-allow-origin" not in client.get("/healthz", headers={"Origin": ORIGIN}).headers
    assert (
        "access-control-allow-origin"
        not in client.post("/v1/track", json={"event": "x"}, headers=bearer(keys.sk)).headers
    )
