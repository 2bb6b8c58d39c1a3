"""GET / and /assets/*: what the server sends for the dashboard, without a browser."""

from __future__ import annotations

import gzip
import re

from starlette.testclient import TestClient

from millimetric.api.dashboard import assets

BUDGET_GZIPPED = 150 * 1024  # all scripts and styles together


def test_the_page_links_versioned_assets_and_is_never_cached(client: TestClient) -> None:
    answer = client.get("/")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    assert answer.headers["cache-control"] == "no-cache"
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    links = re.findall(r'(?:src|href)="(/assets/[^"]+)"', answer.text)
    assert sorted(link.split("?")[0] for link in links) == ["/assets/app.js", "/assets/style.css"]
    # No CDN at run time: every script, style and icon is this server's own (or inline).
    assert all(
        link.startswith(("/assets/", "data:", "#")) for link in re.findall(r'(?:src|href)="([^"]+)"', answer.text)
    )
    for link in links:
        name, version = link.removeprefix("/assets/").split("?v=")
        assert version == assets()[name].etag


def test_assets_are_cacheable_and_revalidate(client: TestClient) -> None:
    answer = client.get("/assets/app.js")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/javascript; charset=utf-8"
    assert "immutable" in answer.headers["cache-control"]
    again = client.get("/assets/app.js", headers={"If-None-Match": answer.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert client.get("/assets/style.css").headers["content-type"] == "text/css; charset=utf-8"


def test_unknown_assets_and_the_page_template_are_not_served(client: TestClient) -> None:
    for path in ("/assets/nope.js", "/assets/index.html", "/assets/..%2Fdashboard.py"):
        answer = client.get(path)
        assert answer.status_code == 404
        assert answer.json() == {"error": "not_found"}


def test_scripts_and_styles_fit_the_budget() -> None:
    found = assets()
    assert set(found) == {"app.js", "style.css"}
    gzipped = sum(len(gzip.compress(asset.body, 9)) for asset in found.values())
    assert gzipped <= BUDGET_GZIPPED
    # No CDN at run time: no module imports and no stylesheet URLs that leave this server.
    assert not re.search(rb"^\s*import\b", found["app.js"].body, re.M)
    assert b"url(" not in found["style.css"].body and b"@import" not in found["style.css"].body
