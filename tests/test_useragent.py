import re
from importlib import resources

import pytest
import yaml

from millimetric.ingest.useragent import Device, parse_user_agent

PATTERNS = yaml.safe_load((resources.files("millimetric") / "data" / "bots.yaml").read_text("utf-8"))

BROWSERS = [
    # Chrome on Windows and macOS
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        ("desktop", "chrome", "windows"),
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        ("desktop", "chrome", "macos"),
    ),
    (
        "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        ("desktop", "chrome", "chromeos"),
    ),
    # Chrome on Android: the "Mobile" token separates phones from tablets
    (
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
        ("mobile", "chrome", "android"),
    ),
    (
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        ("tablet", "chrome", "android"),
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1",
        ("mobile", "chrome", "ios"),
    ),
    # Safari
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
        ("mobile", "safari", "ios"),
    ),
    (
        "Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
        ("tablet", "safari", "ios"),
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
        ("desktop", "safari", "macos"),
    ),
    # Firefox
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
        ("desktop", "firefox", "windows"),
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:133.0) Gecko/20100101 Firefox/133.0",
        ("desktop", "firefox", "macos"),
    ),
    ("Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0", ("desktop", "firefox", "linux")),
    ("Mozilla/5.0 (Android 14; Mobile; rv:133.0) Gecko/133.0 Firefox/133.0", ("mobile", "firefox", "android")),
    ("Mozilla/5.0 (Android 14; Tablet; rv:133.0) Gecko/133.0 Firefox/133.0", ("tablet", "firefox", "android")),
    # Edge, Opera, Samsung Internet
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
        ("desktop", "edge", "windows"),
    ),
    (
        "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36 EdgA/131.0.0.0",
        ("mobile", "edge", "android"),
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 OPR/115.0.0.0",
        ("desktop", "opera", "windows"),
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/25.0 Chrome/121.0.0.0 Mobile Safari/537.36",
        ("mobile", "samsung", "android"),
    ),
    (
        "Mozilla/5.0 (Linux; Android 13; SAMSUNG SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/25.0 Chrome/121.0.0.0 Safari/537.36",
        ("tablet", "samsung", "android"),
    ),
    # in-app web view: a real visitor on a phone, but not one of the named browsers
    (
        "Mozilla/5.0 (Linux; Android 14; Pixel 8 Build/AP2A; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/131.0.0.0 Mobile Safari/537.36",
        ("mobile", "other", "android"),
    ),
    # a phone brand whose name ends in "bot"
    (
        "Mozilla/5.0 (Linux; Android 9; CUBOT X19) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36",
        ("mobile", "chrome", "android"),
    ),
]

BOTS = [
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; Googlebot/2.1; +http://www.google.com/bot.html) Chrome/131.0.6778.69 Safari/537.36",
    "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.69 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Unknown; Linux x86_64) AppleWebKit/538.1 (KHTML, like Gecko) PhantomJS/2.1.1 Safari/538.1",
    "Mozilla/5.0 (compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)",
    "Pingdom.com_bot_version_1.4_(http://www.pingdom.com/)",
    "Mozilla/5.0 (Windows NT 6.1; WOW64; rv:11.0) like Gecko StatusCake",
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)",
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; ClaudeBot/1.0; +claudebot@anthropic.com)",
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "Mozilla/5.0 (Linux; Android 11; moto g power (2022)) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36 Chrome-Lighthouse",
    "Scrapy/2.11.2 (+https://scrapy.org)",
]

# One example per http_clients pattern, in the order of bots.yaml.
HTTP_CLIENTS = [
    "curl/8.5.0",
    "Wget/1.21.4",
    "python-requests/2.32.3",
    "python-httpx/0.28.1",
    "Python-urllib/3.11",
    "Python/3.11 aiohttp/3.9.5",
    "aiohttp/3.9.5",
    "HTTPie/3.2.2",
    "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)",
    "undici",
    "node",
    "axios/1.7.7",
    "got (https://github.com/sindresorhus/got)",
    "Bun/1.1.30",
    "Deno/2.0.0",
    "Go-http-client/1.1",
    "go-resty/2.14.0 (https://github.com/go-resty/resty)",
    "okhttp/4.12.0",
    "Java/17.0.2",
    "Apache-HttpClient/4.5.14 (Java/17.0.2)",
    "libwww-perl/6.72",
    "Ruby",
    "Faraday v2.9.0",
    "Dart/3.3 (dart:io)",
    "GuzzleHttp/7",
    "RestSharp/110.2.0.0",
    "PostmanRuntime/7.39.0",
    "insomnia/2023.5.8",
]


@pytest.mark.parametrize(("ua", "expected"), BROWSERS)
def test_browsers(ua, expected):
    assert parse_user_agent(ua) == Device(*expected, is_bot=False)


@pytest.mark.parametrize("ua", BOTS)
def test_bots(ua):
    device = parse_user_agent(ua)
    assert device.is_bot
    assert device.device_type == "bot"


@pytest.mark.parametrize(("pattern", "ua"), list(zip(PATTERNS["http_clients"], HTTP_CLIENTS, strict=True)))
def test_http_clients_are_not_bots(pattern, ua):
    assert re.search(pattern, ua.lower())
    assert parse_user_agent(ua) == Device("", "other", "", False)


@pytest.mark.parametrize("pattern", PATTERNS["bots"] + PATTERNS["http_clients"])
def test_patterns_are_lowercase_and_spare_real_browsers(pattern):
    assert pattern == pattern.lower()
    for ua, _ in BROWSERS:
        assert not re.search(pattern, ua.lower()), ua


@pytest.mark.parametrize(
    ("ua", "expected"),
    [
        (None, Device("", "", "", False)),
        ("", Device("", "", "", False)),
        ("   ", Device("", "", "", False)),
        ("Mozilla/5.0", Device("", "", "", False)),
        ("definitely not a browser", Device("", "", "", False)),
    ],
)
def test_empty_and_unknown(ua, expected):
    assert parse_user_agent(ua) == expected


def test_hostile_input_is_bounded():
    assert parse_user_agent("Mozilla/5.0 (" * 50_000).is_bot is False


def test_results_are_cached():
    ua = BROWSERS[0][0]
    parse_user_agent(ua)
    hits = parse_user_agent.cache_info().hits
    parse_user_agent(ua)
    assert parse_user_agent.cache_info().hits == hits + 1
