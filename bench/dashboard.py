"""Dashboard benchmark: the first view with data, in headless Chromium over loopback, at N events.

    .venv/bin/python bench/dashboard.py [--events 1000000] [--runs 5] [--reuse]

What it does, in order:
1. loads N synthetic events over the 12 months before today through `millimetric import`, with the
   generator and loader of bench/query.py (same shapes: seasonality, Zipf paths and events, 30
   sources, real enrichment), into bench/results/dashboard-<N>/ (`--reuse` keeps a loaded one);
2. creates a local user with `millimetric users create --password-stdin` (it owns the projects the
   CLI creates), starts `millimetric serve`, and signs in once over HTTP for a session token;
3. for each range (7 days, the default view; 30 days; 12 months) opens the dashboard in a fresh
   Chromium context (empty HTTP cache, token already in the tab's session storage, as for a
   signed-in user opening a new tab) and measures, from navigation start, the time until every
   number, the chart and every panel shows data: once cold (the first view after the server
   started) and `--runs` more times;
4. lists the slowest read-API calls of the last view (browser resource timings), so a slow first
   view names the call that made it slow;
5. prints the machine, the JS+CSS size gzipped (budget 150 KB) and the figures (goal: first view
   <= 1 s), and writes them to bench/results/dashboard-<N>/results-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Browser, sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent))
from query import RESULTS_DIR, load, machine, serve  # noqa: E402  (bench/query.py)

from millimetric.api.dashboard import assets  # noqa: E402

EMAIL = "bench@example.com"
PASSWORD = "bench-password-long-enough"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]
GOAL_MS = 1000.0
BUDGET_KB = 150.0
RANGES = ["7d", "30d", "12mo"]
# Every KPI has its number, the chart is drawn, and no panel still says "Loading…".
LOADED = """() => {
  const kpis = ['visitors', 'pageviews', 'sessions'].every(k => document.querySelector('#kpi-' + k + '[data-value]'));
  const chart = document.querySelector('.chart svg');
  const panels = [...document.querySelectorAll('[data-panel]')];
  const waiting = panels.some(p => p.textContent.includes('Loading'));
  return kpis && chart && panels.length >= 5 && !waiting ? performance.now() : false;
}"""
# The API calls of the view, named by path and the parameters that tell them apart.
RESOURCES = """() => performance.getEntriesByType('resource')
  .filter(e => e.name.includes('/v1/') || e.name.includes('/admin/'))
  .map(e => {
    const u = new URL(e.name);
    ['from', 'to', 'project_id'].forEach(k => u.searchParams.delete(k));
    return {url: decodeURIComponent(u.pathname + u.search), ms: Math.round(e.duration)};
  })"""


def first_view(browser: Browser, url: str, token: str, project_id: str, range_key: str) -> tuple[float, list]:
    context = browser.new_context(timezone_id="UTC", viewport={"width": 1280, "height": 900})
    context.add_init_script(f"sessionStorage.setItem('millimetric.token', {json.dumps(token)})")
    page = context.new_page()
    try:
        page.goto(f"{url}/#overview?project={project_id}&range={range_key}")
        done = page.wait_for_function(LOADED, timeout=120_000).json_value()
        calls = sorted(page.evaluate(RESOURCES), key=lambda c: -c["ms"])
        return float(done), calls
    finally:
        context.close()


def asset_sizes() -> dict[str, Any]:
    found = assets()
    raw = sum(len(a.body) for a in found.values())
    gz = sum(len(gzip.compress(a.body, 9)) for a in found.values())
    return {"files": sorted(found), "raw_kb": round(raw / 1024, 1), "gzipped_kb": round(gz / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--reuse", action="store_true", help="measure an already loaded data directory")
    args = parser.parse_args()

    work = RESULTS_DIR / f"dashboard-{args.events}"
    data_dir, meta_path = work / "data", work / "load.json"
    if args.reuse and meta_path.exists():
        meta = json.loads(meta_path.read_text())
    else:
        shutil.rmtree(work, ignore_errors=True)
        data_dir.mkdir(parents=True)
        end = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0)
        print(f"loading {args.events:,} events through `millimetric import` ...", file=sys.stderr)
        meta = load(data_dir, args.events, end)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "millimetric",
                "users",
                "create",
                EMAIL,
                "--password-stdin",
                "--data-dir",
                str(data_dir),
            ],
            input=PASSWORD + "\n",
            text=True,
            check=True,
            capture_output=True,
        )
        meta_path.write_text(json.dumps(meta, indent=2))

    proc, url = serve(data_dir)
    figures: dict[str, Any] = {}
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            token = client.post("/admin/login", json={"email": EMAIL, "password": PASSWORD}).json()["access_token"]
            projects = client.get("/admin/projects", headers={"Authorization": f"Bearer {token}"}).json()["projects"]
        project_id = next(p["id"] for p in projects if p["slug"] == "bench")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            try:
                for range_key in RANGES:
                    cold, _ = first_view(browser, url, token, project_id, range_key)
                    warm, calls = [], []
                    for _ in range(args.runs):
                        ms, calls = first_view(browser, url, token, project_id, range_key)
                        warm.append(ms)
                    figures[range_key] = {
                        "first_ms": round(cold),
                        "median_ms": round(statistics.median(warm)),
                        "max_ms": round(max(warm)),
                        "slowest_calls": calls[:4],
                    }
            finally:
                browser.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()

    result = {
        "events": args.events,
        "stored": meta["import"].get("stored", args.events),
        "machine": machine(),
        "assets": asset_sizes(),
        "first_view": figures,
        "goal_ms": GOAL_MS,
        "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    m = result["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM; Python {m['python']}")
    print(
        f"events: {result['stored']:,}; JS+CSS: {result['assets']['raw_kb']} KB, "
        f"{result['assets']['gzipped_kb']} KB gzipped (budget {BUDGET_KB:.0f} KB)"
    )
    for range_key, f in figures.items():
        verdict = "meets" if f["median_ms"] <= GOAL_MS else "misses"
        print(
            f"first view, {range_key:>4}: first {f['first_ms']} ms, median {f['median_ms']} ms, "
            f"max {f['max_ms']} ms over {args.runs} runs ({verdict} the {GOAL_MS:.0f} ms goal)"
        )
        print("   slowest calls: " + "; ".join(f"{c['ms']} ms {c['url']}" for c in f["slowest_calls"]))
    out = work / f"results-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
