"""Origin allowlists for pk_ keys (SPEC section 7)."""

import pytest

from millimetric.auth.origins import origin_allowed
from millimetric.store.control import ProjectChanges

from conftest import bearer, create_project

ALLOWED = ["https://shop.example.com", "http://localhost:8787", "https://*.example.org"]


@pytest.mark.parametrize(
    "origin,allowed",
    [
        ("https://shop.example.com", True),  # exact
        ("https://shop.example.com:443", True),  # default port normalised
        ("https://SHOP.Example.COM", True),  # host is case-insensitive
        ("http://shop.example.com", False),  # wrong scheme
        ("https://shop.example.com:8443", False),  # wrong port
        ("https://www.shop.example.com", False),  # www. variant is another origin
        ("https://example.com", False),
        ("http://localhost:8787", True),
        ("http://localhost", False),
        ("https://a.example.org", True),  # wildcard, one level
        ("https://a.b.example.org", True),  # wildcard, two levels
        ("https://example.org", False),  # wildcard does not match the apex
        ("http://a.example.org", False),  # wildcard keeps its scheme
        ("https://evilexample.org", False),
        ("https://a.example.org.evil.com", False),
        ("null", False),  # sandboxed iframes, file:// pages
        ("", False),
        (None, False),
        ("https://shop.example.com/path", False),
    ],
)
def test_origin_matching(origin, allowed):
    assert origin_allowed(origin, ALLOWED) is allowed


def test_apex_is_allowed_when_listed_beside_its_wildcard():
    assert origin_allowed("https://example.org", ["https://*.example.org", "https://example.org"])


def test_pk_over_http(client):
    keys = create_project(client, "o", origins=tuple(ALLOWED))
    ok = client.post("/v1/track", json={"event": "x"}, headers=bearer(keys.pk, Origin="https://A.B.EXAMPLE.ORG"))
    assert ok.status_code == 202
    for origin in ("null", "https://example.org", "http://shop.example.com"):
        r = client.post("/v1/track", json={"event": "x"}, headers=bearer(keys.pk, Origin=origin))
        assert (r.status_code, r.json()["error"]) == (403, "origin_not_allowed")
    r = client.post("/v1/track", json={"event": "x"}, headers=bearer(keys.pk))
    assert (r.status_code, r.json()["error"]) == (403, "origin_not_allowed")


def test_origin_changes_apply_without_restart(client):
    keys = create_project(client, "o", origins=("https://old.example.com",))
    services = client.app.state.services
    services.control.update_project(keys.project_id, ProjectChanges(allowed_origins=["https://new.example.com"]))
    services.keys.invalidate()  # what the key-cache TTL does on its own within 60 s
    headers = bearer(keys.pk, Origin="https://new.example.com")
    assert client.post("/v1/track", json={"event": "x"}, headers=headers).status_code == 202
