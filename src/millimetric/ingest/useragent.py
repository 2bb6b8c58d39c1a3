"""User-Agent -> device type, browser and OS in SPEC section 3's small value sets.

ua-parser does the parsing; `millimetric/data/user_agents.yaml` folds its family names into
our sets. `bots.yaml` lists crawlers, monitors and headless browsers that ua-parser's `Spider`
device misses. It also lists the HTTP client libraries that are *not* bots (SPEC section 3)
although ua-parser files some of them (Java, Python-urllib) under `Spider`.

Pure-Python ua-parser costs about 0.5 ms per new string. `ua_parser.parse` switches to the
ua-parser-rs accelerator (about 10 µs) when it is installed. Traffic repeats a small set of
strings, so results are cached here as well.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import NamedTuple

import ua_parser

from millimetric.data import load_data
from millimetric.events.model import EventRow
from millimetric.ingest.visit import Visit

__all__ = ["Device", "parse_user_agent"]


class Device(NamedTuple):
    device_type: str  # mobile | tablet | desktop | bot | ""
    browser: str  # chrome | firefox | safari | edge | opera | samsung | other | ""
    os: str  # windows | macos | ios | android | linux | chromeos | other | ""
    is_bot: bool


def _by_family(groups: dict[str, list[str]]) -> dict[str, str]:
    return {family: name for name, families in groups.items() for family in families}


_FAMILIES = load_data("user_agents.yaml")
_BROWSERS = _by_family(_FAMILIES["browsers"])
_OSES = _by_family(_FAMILIES["os"])
_FORM_FACTORS = _by_family(_FAMILIES["devices"])
_AGENTS = load_data("bots.yaml")
# Client patterns are anchored, so one alternation fails fast; the bot patterns are mostly
# literals, which re finds faster one by one than through a long alternation.
_HTTP_CLIENT = re.compile("|".join(f"(?:{p})" for p in _AGENTS["http_clients"]))
_BOTS = tuple(re.compile(p) for p in _AGENTS["bots"])
_DESKTOP_OSES = frozenset({"windows", "macos", "linux", "chromeos"})
# Real User-Agents stay well below this; the cap bounds regex time on hostile input.
_MAX_LENGTH = 1024


@lru_cache(maxsize=4096)
def parse_user_agent(user_agent: str | None) -> Device:
    """Classify a User-Agent header; a missing or blank one gives all-empty fields."""
    ua = (user_agent or "").strip()[:_MAX_LENGTH]
    if not ua:
        return Device("", "", "", False)
    lowered = ua.lower()
    if _HTTP_CLIENT.search(lowered):
        return Device("", "other", "", False)
    parsed = ua_parser.parse(ua)
    browser = _name(parsed.user_agent, _BROWSERS)
    os = _name(parsed.os, _OSES)
    device = parsed.device.family if parsed.device else ""
    if device == "Spider" or any(bot.search(lowered) for bot in _BOTS):
        return Device("bot", browser, os, True)
    return Device(_device_type(ua, os, device), browser, os, False)


def _name(part: ua_parser.UserAgent | ua_parser.OS | None, names: dict[str, str]) -> str:
    """Our name for a parsed family: "other" if unlisted, "" if ua-parser found none."""
    return "" if part is None else names.get(part.family, "other")


def _device_type(ua: str, os: str, device: str) -> str:
    if form_factor := _FORM_FACTORS.get(device):
        return form_factor
    if os == "android":
        # Android browsers put "Mobile" in the UA on phones and leave it out on tablets.
        return "mobile" if "Mobile" in ua else "tablet"
    if os == "ios":
        return "mobile"
    return "desktop" if os in _DESKTOP_OSES else ""


def put_user_agent(row: EventRow, visit: Visit) -> str | None:
    """Pipeline step: device type, browser and OS; known bots get device_type `bot`."""
    device = parse_user_agent(visit.user_agent)
    row.device_type = "bot" if device.is_bot else device.device_type
    row.browser, row.os = device.browser, device.os
    return None
