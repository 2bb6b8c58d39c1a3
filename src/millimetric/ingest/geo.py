"""Client IP -> ISO 3166-1 alpha-2 country, offline, never finer than a country (SPEC section 3).

iptocc ships the Regional Internet Registries' delegation data inside the package, so there
is no database file to download or refresh at run time.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

import iptocc

from millimetric.events.model import EventRow
from millimetric.ingest.visit import Visit

__all__ = ["country_for_ip"]


@lru_cache(maxsize=65536)  # a visitor's events repeat their address; the cache lives in memory only
def country_for_ip(ip: str | None) -> str:
    """Uppercase country code of a public address; "" for private, reserved, unknown or garbage."""
    if not ip:
        return ""
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return ""
    # Dual-stack sockets report IPv4 peers as ::ffff:a.b.c.d.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    if not address.is_global:
        return ""
    return (iptocc.country_code(str(address)) or "").upper()


def put_country(row: EventRow, visit: Visit) -> str | None:
    """Pipeline step: the trusted proxy's country header when configured, else the IP lookup."""
    row.country = visit.proxy_country or country_for_ip(visit.ip)
    return None
