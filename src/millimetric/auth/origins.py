"""Origin allowlists: exact scheme/host/port matches and `https://*.example.com` wildcards."""

from __future__ import annotations

from typing import Iterable
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalise_origin(origin: str) -> tuple[str, str, int] | None:
    """(scheme, lowercase host, port) with default ports filled in; None when not an origin."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower().rstrip(".")
    if scheme not in _DEFAULT_PORTS or not host or parts.path not in ("", "/") or parts.query or parts.username:
        return None
    return scheme, host, port or _DEFAULT_PORTS[scheme]


def origin_allowed(origin: str | None, allowed: Iterable[str]) -> bool:
    """True when `origin` matches an entry exactly, or a `*.` entry at any subdomain depth."""
    if not origin:
        return False
    presented = normalise_origin(origin)
    if presented is None:
        return False
    scheme, host, port = presented
    for entry in allowed:
        wildcard = "://*." in entry
        wanted = normalise_origin(entry.replace("://*.", "://", 1) if wildcard else entry)
        if wanted is None or wanted[0] != scheme or wanted[2] != port:
            continue
        if host == wanted[1] if not wildcard else host.endswith("." + wanted[1]):
            return True
    return False
