"""GET /v1/a.js: the size budget, the bytes served, and the caching headers."""

from __future__ import annotations

import gzip
from importlib import resources

SOURCE = (resources.files("millimetric") / "web" / "a.js").read_bytes()


def test_the_snippet_is_at_most_2048_bytes_gzipped() -> None:
    assert len(gzip.compress(SOURCE, 9)) <= 2048


def test_served_as_javascript_with_caching_headers(client) -> None:
    r = client.get("/v1/a.js", headers={"Accept-Encoding": "identity"})
    assert r.status_code == 200
    assert r.content == SOURCE
    assert r.headers["content-type"] == "text/javascript; charset=utf-8"
    assert "content-encoding" not in r.headers
    assert r.headers["cache-control"].startswith("public, max-age=")
    etag = r.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"') and len(etag) > 10

    again = client.get("/v1/a.js", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    assert client.get("/v1/a.js", headers={"If-None-Match": '"other"'}).status_code == 200


def test_gzip_when_accepted(client) -> None:
    r = client.get("/v1/a.js", headers={"Accept-Encoding": "gzip, br"})
    assert r.headers["content-encoding"] == "gzip"
    assert r.headers["vary"] == "Accept-Encoding"
    assert int(r.headers["content-length"]) <= 2048
    assert r.content == SOURCE  # httpx decodes it
    refused = client.get("/v1/a.js", headers={"Accept-Encoding": "gzip;q=0"})
    assert "content-encoding" not in refused.headers
