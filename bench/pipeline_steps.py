"""Per-event cost of each ingest pipeline step, in microseconds (in-process, no HTTP).

Runs every step of `pipeline.STEPS` over realistic events (a mix of user agents, referrers and
URLs, so caches see repeats as real traffic does) and prints the mean cost per event of each.

usage: python bench/pipeline_steps.py [--events N]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import time
from typing import Any

from millimetric.ingest import pipeline
from millimetric.ingest.schemas import TrackEvent
from millimetric.ingest.visit import Visit

USER_AGENTS = [
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36",
]
REFERRERS = [None, "https://www.google.com/", "https://l.facebook.com/", "https://news.ycombinator.com/", "https://someblog.example.org/post"]
URLS = ["https://shop.example.com/", "https://shop.example.com/p/1?utm_source=newsletter&utm_medium=email",
        "https://shop.example.com/?gclid=abc", "https://shop.example.com/pricing?fbclid=xyz"]
IPS = ["8.8.8.8", "81.2.69.160", "2a00:1450:4001:81b::200e", "203.0.113.9"]


def measure(events: int) -> dict[str, Any]:
    """Mean microseconds per event of each step, after a warm-up (lazy loads, caches)."""
    _run(2_000)
    return _run(events)


def _run(events: int) -> dict[str, Any]:
    now = dt.datetime(2026, 11, 26, 12)
    items = []
    for i in range(events):
        visit = Visit("project", now, IPS[i % len(IPS)], USER_AGENTS[i % len(USER_AGENTS)], "shop.example.com",
                      salt=b"s" * 32)
        event = TrackEvent(event="$pageview", url=URLS[i % len(URLS)], referrer=REFERRERS[i % len(REFERRERS)],
                           user_id=f"user-{i % 100}" if i % 3 == 0 else None)
        items.append((pipeline.new_row(event, "{}", visit), visit))
    costs: dict[str, float] = {}
    for step in pipeline.STEPS:
        started = time.perf_counter()
        for row, visit in items:
            step(row, visit)
        costs[step.__name__] = (time.perf_counter() - started) / events * 1e6
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    args = parser.parse_args()
    costs = measure(args.events)
    print(f"pipeline step costs, {args.events} events, {platform.python_implementation()} {platform.python_version()}")
    for name, us in costs.items():
        print(f"  {name:<16} {us:8.2f} us/event")
    print(f"  {'total':<16} {sum(costs.values()):8.2f} us/event")
    print(json.dumps({"pipeline_step_us": costs}))


if __name__ == "__main__":
    main()
