"""Attribution classifier: where did a hit come from (SPEC section 6)?

`classify` applies the rules in the spec's order and the first match decides. Each rule has a
stable `rule_id`, stored with the event so `GET /v1/classify` can explain a source and old rows
can be re-derived when the rules change. The domain lists and query-string signals live in
`millimetric/data/referrers.yaml` and `attribution.yaml`.

Where the spec is silent:

- Query parameter names are matched case-insensitively; a blank value counts as absent.
  utm_source and utm_medium are trimmed and lowercased, and utm_source spellings of one
  network are folded together for every rule (fb, meta -> facebook; ig -> instagram).
- A referrer host matches a listed domain or any subdomain of it, and the most specific listed
  domain wins across the lists: mail.google.com is gmail/email, gemini.google.com is gemini/ai,
  although google.com is a search engine. Rules 7-11 therefore never compete for one host.
- Rule 5 (fbclid alone) needs fbclid without utm_source. Facebook adds fbclid to organic
  shares too, so explicit utm tagging (rule 6) says more.
- Rule 11 has two ids. `email_referrer`: a webmail referrer gives its provider. `utm_email`:
  utm_medium=email gives unknown/email (a webmail referrer has already matched, and with a
  utm_source rule 6 has).
- Rule 12 compares hosts without port and leading "www.".
- Rule 13 needs no referrer and no utm_medium. Otherwise rule 14 names the referrer's
  registrable domain, counting the PSL's private suffixes (alice.github.io stays
  alice.github.io), or its host when it has none (IPs, localhost). It falls back to
  "unknown" when there is no referrer. The medium is utm_medium when given, else referral.
- A URL or referrer that does not parse has no host. classify never raises.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Literal, NamedTuple
from urllib.parse import parse_qsl, urlsplit

import tldextract

from millimetric.data import load_data
from millimetric.events.model import EventRow
from millimetric.ingest.visit import Visit

__all__ = ["Attribution", "Confidence", "classify"]

Confidence = Literal["high", "medium", "low"]


class Attribution(NamedTuple):
    source: str
    medium: str
    campaign: str | None
    confidence: Confidence
    rule_id: str


_SIGNALS = load_data("attribution.yaml")
_CLICK_IDS: dict[str, str] = _SIGNALS["click_ids"]
_FB_AD_REDIRECT_HOSTS = frozenset(_SIGNALS["fb_ad_redirect_hosts"])
_PAID_MEDIUMS = frozenset(_SIGNALS["paid_mediums"])
_EMAIL_MEDIUMS = frozenset(_SIGNALS["email_mediums"])
_SOURCE_ALIASES = {alias: source for source, aliases in _SIGNALS["utm_source_aliases"].items() for alias in aliases}
_META_SOURCES = frozenset(_SIGNALS["utm_source_aliases"])

# referrers.yaml group -> (medium, rule_id) of the rule that group feeds (rules 7-11).
_GROUP_RULES = {
    "facebook": ("social", "facebook_referrer"),
    "social": ("social", "social_referrer"),
    "search": ("organic", "search_referrer"),
    "ai": ("ai", "ai_referrer"),
    "email": ("email", "email_referrer"),
}
_REFERRERS: dict[str, tuple[str, str, str]] = {
    domain: (source, *_GROUP_RULES[group])
    for group, sources in load_data("referrers.yaml").items()
    for source, domains in sources.items()
    for domain in domains
}

# Bundled public suffix list only: classifying must never touch the network.
_extract = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, include_psl_private_domains=True)
_HOSTNAME = re.compile(r"[\w.:-]+")


@lru_cache(maxsize=16384)  # pages, campaigns and referrers repeat; the function is pure
def classify(url: str | None, referrer: str | None, request_host: str | None = None) -> Attribution:
    """Attribute a hit on `url`, reached from `referrer`, received on `request_host`."""
    params = _params(url or "")
    source, medium, confidence, rule_id = _first_match(params, url or "", _host(referrer or ""), request_host or "")
    return Attribution(source, medium, params.get("utm_campaign"), confidence, rule_id)


def _first_match(
    params: dict[str, str], url: str, referrer_host: str, request_host: str
) -> tuple[str, str, Confidence, str]:
    for name, network in _CLICK_IDS.items():
        if name in params:
            return network, "paid", "high", f"click_id_{name}"
    utm_source = params.get("utm_source", "").lower()
    utm_source = _SOURCE_ALIASES.get(utm_source, utm_source)
    utm_medium = params.get("utm_medium", "").lower()
    fbclid = "fbclid" in params
    if fbclid and referrer_host in _FB_AD_REDIRECT_HOSTS:
        return "facebook", "paid", "high", "fb_ad_redirect"
    if fbclid and utm_source in _META_SOURCES:
        return utm_source, "paid", "high", "fbclid_utm_source"
    if utm_medium in _PAID_MEDIUMS:
        if utm_source:
            return utm_source, "paid", "high", "utm_paid_medium"
        return "unknown", "paid", "medium", "utm_paid_medium"
    if fbclid and not utm_source:
        return "facebook", "paid", "medium", "fbclid_only"
    if utm_source:
        return utm_source, utm_medium or "unknown", "high", "utm_source"
    if listed := _listed(referrer_host):
        source, medium, rule_id = listed
        return source, medium, "medium", rule_id
    if utm_medium in _EMAIL_MEDIUMS:
        return "unknown", "email", "medium", "utm_email"
    if referrer_host and _bare(referrer_host) in (
        _bare(_host(url)),
        _bare(_host("//" + request_host)),
    ):
        return "internal", "internal", "high", "internal"
    if not referrer_host and not utm_medium:
        return "direct", "direct", "high", "direct"
    source = _registrable(referrer_host) if referrer_host else "unknown"
    return source, utm_medium or "referral", "low", "referral"


def _params(url: str) -> dict[str, str]:
    """Query parameters with lowercased names and trimmed values; the first non-blank wins."""
    params: dict[str, str] = {}
    # Split as urlsplit does (fragment first), which cannot fail on a malformed netloc.
    for name, value in parse_qsl(url.partition("#")[0].partition("?")[2]):
        if value := value.strip():
            params.setdefault(name.strip().lower(), value)
    return params


def _host(url: str) -> str:
    """Lowercased host of `url` without port or trailing dot; "" if it has none or is garbage."""
    try:
        host = (urlsplit(url.strip()).hostname or "").rstrip(".")
    except ValueError:  # e.g. an unclosed IPv6 literal: "http://[::1"
        return ""
    return host if _HOSTNAME.fullmatch(host) else ""


def _bare(host: str) -> str:
    return host.removeprefix("www.")


def _listed(host: str) -> tuple[str, str, str] | None:
    """(source, medium, rule_id) of the most specific listed domain that is `host` or its parent."""
    while host:
        if hit := _REFERRERS.get(host):
            return hit
        host = host.partition(".")[2]
    return None


def _registrable(host: str) -> str:
    return _extract.extract_str(host).top_domain_under_public_suffix or host


def put_source(row: EventRow, visit: Visit) -> str | None:
    """Pipeline step: attribution columns from the hit's URL, referrer and receiving host."""
    hit = classify(row.url, row.referrer, visit.request_host)
    row.source, row.medium, row.campaign, row.source_confidence, row.source_rule_id = hit
    return None
