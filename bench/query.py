"""Read benchmark: N synthetic events loaded through `millimetric import`, then eight typical
dashboard reads, (a) to (h) in `queries`, timed over HTTP against a real `millimetric serve` process.

    .venv/bin/python bench/query.py [--events 10000000] [--runs 20] [--reuse] [--only a,h]

What it does, in order:
1. a fresh data directory (bench/results/query-<N>/data; `--reuse` keeps an already loaded one)
   and a project made with the CLI (`projects create --json`);
2. generates N events spread over the 12 months before now and pipes them, as NDJSON, into
   `millimetric import - --project bench` (validation, enrichment and the group-commit writer of
   the API: no second write path). Shapes: daily (peak mid-afternoon UTC) and weekly (quieter
   weekends) seasonality and slow growth; each day's visitors come from a pool of 100,000 that
   turns over 1% a day (about 465k distinct visitors a year), with a few heavy returning visitors;
   50 event names and 2,000 paths, both Zipf-distributed; 30 sources with their mediums, expressed
   the way browsers send them (utm parameters, click ids, referrers) so the real classifier derives
   them; per-visitor public IPv4 addresses and user agents (sent as `context`, which import
   honours) so country, device, browser, os and ip_hash come from the real enrichment steps;
   1 visitor in 20 is identified (user_id on their events and one `$identify`);
3. reports load time and bytes per event on disk (the DuckDB file after import's checkpoint);
4. starts `millimetric serve` on the data directory and times each query `--runs` times (after one
   warm-up) with one keep-alive HTTP connection: p50, p95 (nearest rank) and max;
5. prints the machine (CPU model, cores, RAM), the figures, the targets (p95 <= 150 ms, the funnel
   (h) <= 300 ms; <= 40 bytes per event) and writes everything to
   bench/results/query-<N>/results-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import msgspec

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
PROJECT = "bench"
TARGET_P95_MS = 150.0
TARGET_P95_MS_BY_QUERY = {"h_funnel_3_steps_30d": 300.0}  # a funnel orders each visitor's events
TARGET_BYTES_PER_EVENT = 40.0

VISITOR_POOL = 100_000  # visitors a day's events are drawn from
POOL_TURNOVER = 1_000  # new visitors entering the pool each day
IDENTIFIED_EVERY = 20  # 1 visitor in 20 has a user_id
EVENTS_PER_SESSION = 4  # mean; the first is the landing $pageview
EVENT_NAMES = ["$pageview", "click", "scroll", "add_to_cart", "view_item", "search", "signup", "login",
               "purchase", "begin_checkout"] + [f"custom_event_{i:02d}" for i in range(40)]
PATHS = ["/", "/pricing", "/blog", "/docs", "/signup", "/login", "/cart", "/checkout"] + [f"/p/{i}" for i in range(1, 1993)]
# (weight, url query, referrer): the classifier turns these into 30 source/medium pairs.
SOURCES = [
    (30, "", ""),  # direct/direct
    (18, "", "https://www.google.com/"),
    (6, "?gclid=Cj0KCQ123", ""),  # google/paid
    (5, "?fbclid=IwAR1x&utm_source=facebook&utm_medium=paid_social&utm_campaign=spring", ""),
    (4, "", "https://l.facebook.com/"),  # facebook/social
    (4, "", "https://www.bing.com/"),
    (3, "", "https://duckduckgo.com/"),
    (3, "?utm_source=newsletter&utm_medium=email&utm_campaign=weekly", ""),
    (3, "", "https://t.co/abc"),
    (3, "", "https://www.linkedin.com/feed/"),
    (2, "", "https://www.reddit.com/r/python/"),
    (2, "", "https://www.youtube.com/"),
    (2, "", "https://news.ycombinator.com/"),
    (2, "", "https://chatgpt.com/"),
    (2, "", "https://www.instagram.com/"),
    (2, "?msclkid=abc123", ""),  # bing/paid
    (1, "", "https://www.perplexity.ai/"),
    (1, "", "https://claude.ai/"),
    (1, "", "https://mail.google.com/"),
    (1, "?ttclid=tt123", ""),  # tiktok/paid
    (1, "?li_fat_id=li123", ""),  # linkedin/paid
    (1, "", "https://yandex.ru/"),
    (1, "", "https://www.ecosia.org/"),
    (1, "?utm_source=partner&utm_medium=affiliate", ""),
    (1, "", "https://blog.example.org/post"),
    (1, "", "https://forum.example.net/t/1"),
    (1, "", "https://www.producthunt.com/"),
    (1, "", "https://github.com/"),
    (1, "", "https://stackoverflow.com/"),
    (1, "", "https://www.pinterest.com/"),
]
USER_AGENTS = [
    (30, "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"),
    (15, "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"),
    (15, "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36"),
    (12, "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15"),
    (8, "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.0.0"),
    (6, "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"),
    (5, "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0"),
    (4, "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"),
    (3, "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36"),
    (2, "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"),
]


def _zipf_weights(n: int, s: float = 1.1) -> list[float]:
    return [1 / (rank ** s) for rank in range(1, n + 1)]


class Generator:
    """Deterministic synthetic events, in time order, as NDJSON lines."""

    def __init__(self, n: int, end: dt.datetime, seed: int = 7) -> None:
        self.n = n
        self.end = end.replace(hour=0, minute=0, second=0, microsecond=0)  # days run midnight to midnight UTC
        self.start = self.end - dt.timedelta(days=365)
        self.rng = random.Random(seed)
        self.seen: set[int] = set()
        self.probe_user: str | None = None

    def _day_counts(self) -> list[int]:
        weekly = [1.0, 1.05, 1.05, 1.0, 0.95, 0.7, 0.6]  # Monday first
        weights = [weekly[(self.start + dt.timedelta(days=d)).weekday()] * (0.8 + 0.4 * d / 365) for d in range(365)]
        total = sum(weights)
        counts = [int(self.n * w / total) for w in weights]
        counts[-1] += self.n - sum(counts)
        return counts

    def _anonymous_id(self, visitor: int) -> str:
        return "u_" + format((visitor * 0x9E3779B97F4A7C15F39CC061 + 0x5851F42D4C957F2D) % (1 << 96), "024x")

    def _ip(self, visitor: int) -> str:
        x = (visitor * 2654435761 + 12345) % (1 << 32)
        first = 11 + x % 212  # public unicast /8s (a few land on unallocated space: country "")
        return f"{first}.{(x >> 8) & 255}.{(x >> 16) & 255}.{1 + (x >> 24) % 254}"

    def _user_agent(self, visitor: int) -> str:
        return USER_AGENTS[self._ua_index[visitor % len(self._ua_index)]][1]

    def _session(self, visitor: int, start_ms: int, size: int) -> list[tuple[int, dict[str, Any]]]:
        """One visit: lands from a source, then moves around the site (internal referrers)."""
        rng = self.rng
        _, query, referrer = rng.choices(SOURCES, self._source_weights)[0]
        paths = rng.choices(PATHS, self._path_weights, k=size)
        names = ["$pageview"] + rng.choices(EVENT_NAMES, self._name_weights, k=size - 1)
        context = {"ip": self._ip(visitor), "user_agent": self._user_agent(visitor)}
        events, at = [], start_ms
        for i in range(size):
            event: dict[str, Any] = {
                "event": names[i], "anonymous_id": self._anonymous_id(visitor),
                "url": f"https://shop.example.com{paths[i]}{query if i == 0 else ''}", "path": paths[i],
                "context": context,
            }
            if i == 0 and referrer:
                event["referrer"] = referrer
            elif i > 0:
                event["referrer"] = f"https://shop.example.com{paths[i - 1]}"
            if names[i] == "purchase":
                event["properties"] = {"amount_cents": rng.randint(500, 20000), "currency": "usd"}
            if visitor % IDENTIFIED_EVERY == 0:
                event["user_id"] = f"user_{visitor}"
                if visitor not in self.seen:  # the first event of an identified visitor is their $identify
                    self.seen.add(visitor)
                    event = {"event": "$identify", "anonymous_id": event["anonymous_id"],
                             "user_id": event["user_id"], "context": context}
            events.append((at, event))
            at += 1000 + int(rng.expovariate(1 / 45_000))
        return events

    def lines(self) -> Iterator[bytes]:
        rng, encode = self.rng, msgspec.json.encode
        hour_weights = [1 + math.sin((h - 8) / 24 * 2 * math.pi) * 0.8 for h in range(24)]
        self._name_weights, self._path_weights = _zipf_weights(len(EVENT_NAMES)), _zipf_weights(len(PATHS))
        self._source_weights = [w for w, _, _ in SOURCES]
        self._ua_index = rng.choices(range(len(USER_AGENTS)), [w for w, _ in USER_AGENTS], k=9973)
        day_ms = 86_400_000
        for day, count in enumerate(self._day_counts()):
            events: list[tuple[int, dict[str, Any]]] = []
            while len(events) < count:
                visitor = day * POOL_TURNOVER + int(VISITOR_POOL * rng.random() ** 2)
                if self.probe_user is None and day >= 180 and visitor % IDENTIFIED_EVERY == 0:
                    self.probe_user = f"user_{visitor}"  # query (f) reads this user's 12 months
                size = min(1 + int(rng.expovariate(1 / (EVENTS_PER_SESSION - 1))), 30, count - len(events))
                start = rng.choices(range(24), hour_weights)[0] * 3_600_000 + rng.randrange(3_600_000)
                events += [(min(at, day_ms - 1), e) for at, e in self._session(visitor, start, size)]
            events.sort(key=lambda item: item[0])
            midnight = self.start + dt.timedelta(days=day)
            for at, event in events:
                when = midnight + dt.timedelta(milliseconds=at)
                event["timestamp"] = when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at % 1000:03d}Z"
                yield encode(event) + b"\n"


def cli(data_dir: Path, *args: str, env: dict[str, str] | None = None, **kwargs: Any) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "millimetric", *args, "--data-dir", str(data_dir)],
                          check=True, capture_output=True, env={**os.environ, **(env or {})}, **kwargs)


def load(data_dir: Path, n: int, end: dt.datetime, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Create the project and pipe N generated events through `millimetric import -`."""
    keys = json.loads(cli(data_dir, "projects", "create", PROJECT, "--json", env=env).stdout)["keys"]
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "millimetric", "import", "-", "--project", PROJECT, "--json", "--data-dir", str(data_dir)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={**os.environ, **(env or {})},
    )
    assert proc.stdin is not None
    chunk: list[bytes] = []
    generator = Generator(n, end)
    for line in generator.lines():
        chunk.append(line)
        if len(chunk) == 2000:
            proc.stdin.write(b"".join(chunk))
            chunk = []
    proc.stdin.write(b"".join(chunk))
    proc.stdin.close()
    summary = json.loads(proc.stdout.read() or b"{}")
    if proc.wait() != 0:
        raise SystemExit("import failed")
    seconds = time.perf_counter() - started
    return {"keys": keys, "import": summary, "load_seconds": round(seconds, 1), "end": end.isoformat(),
            "probe_user": generator.probe_user}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(data_dir: Path, extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "MILLIMETRIC_LOG_LEVEL": "warning", "MILLIMETRIC_RATE_LIMITS": "off", **(extra_env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "millimetric", "serve", "--data-dir", str(data_dir), "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("server did not start")


def _iso(instant: dt.datetime) -> str:
    return instant.strftime("%Y-%m-%dT%H:%M:%SZ")


def queries(end: dt.datetime, user: str) -> dict[str, tuple[str, dict[str, str]]]:
    """The eight benchmarked reads, (a) to (h), as (path, query parameters)."""
    year = {"from": _iso(end - dt.timedelta(days=365)), "to": _iso(end)}
    month = {"from": _iso(end - dt.timedelta(days=30)), "to": _iso(end)}
    day_start = end - dt.timedelta(days=180)
    day = {"from": _iso(day_start), "to": _iso(day_start + dt.timedelta(days=1))}
    return {
        "a_daily_count_one_event_12mo": ("/v1/stats", {**year, "event": "click", "interval": "day", "limit": "1000"}),
        "b_top10_sources_12mo": ("/v1/stats", {**year, "group_by": "source", "limit": "10"}),
        "c_top10_paths_uniques_30d": ("/v1/stats", {**month, "metric": "uniques", "group_by": "path", "limit": "10"}),
        "d_uniques_30d": ("/v1/stats", {**month, "metric": "uniques"}),
        "e_hourly_device_type_1d": ("/v1/stats", {**day, "interval": "hour", "group_by": "device_type", "limit": "1000"}),
        "f_query_one_user_12mo": ("/v1/query", {**year, "user_id": user}),
        "g_sources_12mo": ("/v1/sources", year),
        "h_funnel_3_steps_30d": ("/v1/funnel", {**month, "steps": "$pageview,add_to_cart,purchase"}),
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def time_queries(
    url: str, rk: str, end: dt.datetime, user: str, runs: int, only: set[str] | None = None
) -> dict[str, dict[str, Any]]:
    figures: dict[str, dict[str, Any]] = {}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {rk}"}, timeout=60) as client:
        for name, (path, params) in queries(end, user).items():
            if only is not None and name.split("_", 1)[0] not in only:
                continue
            first = client.get(path, params=params)
            first.raise_for_status()
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                client.get(path, params=params).raise_for_status()
                times.append((time.perf_counter() - started) * 1000)
            figures[name] = {
                "p50_ms": round(percentile(times, 0.5), 1), "p95_ms": round(percentile(times, 0.95), 1),
                "max_ms": round(max(times), 1), "rows": len(first.json().get("rows", first.json().get("steps", []))),
            }
    return figures


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": round(mem_kb / 2**20, 1), "python": platform.python_version()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--reuse", action="store_true", help="time queries on an already loaded data directory")
    parser.add_argument("--only", help="comma list of the queries to time, by letter (e.g. h); default all")
    parser.add_argument("--clickhouse", metavar="URL",
                        help="also load the same events into ClickHouse at URL (http://user:pass@host:8123, or "
                             "'standin' for the test stand-in) and time the same reads there")
    args = parser.parse_args()

    work = RESULTS_DIR / f"query-{args.events}"
    data_dir, meta_path = work / "data", work / "load.json"
    if args.reuse and meta_path.exists():
        meta = json.loads(meta_path.read_text())
    else:
        shutil.rmtree(work, ignore_errors=True)
        data_dir.mkdir(parents=True)
        end = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0)
        print(f"loading {args.events:,} events through `millimetric import` ...", file=sys.stderr)
        meta = load(data_dir, args.events, end)
        meta_path.write_text(json.dumps(meta, indent=2))
    end = dt.datetime.fromisoformat(meta["end"])
    store = data_dir / "events.duckdb"
    size = sum(p.stat().st_size for p in data_dir.glob("events.duckdb*"))
    stored = meta["import"].get("stored", args.events)

    proc, url = serve(data_dir)
    try:
        only = set(args.only.split(",")) if args.only else None
        figures = time_queries(url, meta["keys"]["rk"], end, meta.get("probe_user") or "user_180000", args.runs, only)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)

    result = {
        "machine": machine(),
        "events": args.events,
        "stored": stored,
        "import": meta["import"],
        "load_seconds": meta["load_seconds"],
        "load_events_per_s": round(args.events / meta["load_seconds"]),
        "store_bytes": size,
        "bytes_per_event": round(size / max(stored, 1), 1),
        "queries": figures,
        "runs": args.runs,
    }
    if args.clickhouse:
        result["clickhouse"] = clickhouse_run(args, work, end, meta.get("probe_user") or "user_180000")
    out = work / f"results-{dt.datetime.now():%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps(result, indent=2))

    m = result["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, Python {m['python']}")
    print(f"events: {args.events:,} generated, {stored:,} stored ({store.name})")
    print(f"load:   {result['load_seconds']:,} s ({result['load_events_per_s']:,} events/s through import)")
    ok = result["bytes_per_event"] <= TARGET_BYTES_PER_EVENT
    print(f"disk:   {size / 2**20:,.1f} MiB, {result['bytes_per_event']} bytes/event "
          f"(target <= {TARGET_BYTES_PER_EVENT:g}: {'met' if ok else 'MISSED'})")
    print(f"queries over HTTP, {args.runs} runs each after a warm-up (target p95 <= {TARGET_P95_MS:g} ms, "
          f"the funnel <= {TARGET_P95_MS_BY_QUERY['h_funnel_3_steps_30d']:g} ms):")
    for name, f in figures.items():
        verdict = "met" if f["p95_ms"] <= TARGET_P95_MS_BY_QUERY.get(name, TARGET_P95_MS) else "MISSED"
        print(f"  {name:32s} p50 {f['p50_ms']:7.1f} ms  p95 {f['p95_ms']:7.1f} ms  max {f['max_ms']:7.1f} ms"
              f"  rows {f['rows']:4d}  {verdict}")
    if args.clickhouse:
        ch = result["clickhouse"]
        print(f"clickhouse ({ch['server']}): load {ch['load_seconds']:,} s ({ch['load_events_per_s']:,} events/s "
              f"through import, spool shipping included), {ch['stored']:,} events stored")
        print(f"  system.parts: {ch['bytes'] / 2**20:,.1f} MiB, {ch['bytes_per_event']} bytes/event "
              f"(goal <= 15: {'met' if ch['bytes_per_event'] <= 15 else 'MISSED'})")
        print("  p95 beside the embedded store's:")
        for name, f in ch["queries"].items():
            embedded = figures[name]
            print(f"  {name:32s} clickhouse p50 {f['p50_ms']:7.1f} p95 {f['p95_ms']:7.1f} ms   embedded p95 "
                  f"{embedded['p95_ms']:7.1f} ms   ratio {f['p95_ms'] / max(embedded['p95_ms'], 0.1):5.1f}x   "
                  f"rows {f['rows']:4d} vs {embedded['rows']:4d}")
    print(f"results: {out.relative_to(ROOT)}")


def clickhouse_server(target: str, work: Path) -> tuple[str, Any]:
    """(base URL, stand-in process or None) for `--clickhouse`."""
    if target != "standin":
        return target.rstrip("/"), None
    sys.path.insert(0, str(ROOT / "tests"))
    from clickhouse_standin import StandInProcess

    standin = StandInProcess(work / "clickhouse-standin", max_threads=0).start()
    return standin.url, standin


def clickhouse_run(args: argparse.Namespace, work: Path, end: dt.datetime, user: str) -> dict[str, Any]:
    """The same events through `millimetric import` into ClickHouse, then the same reads over HTTP."""
    from urllib.parse import urlsplit

    import clickhouse_connect

    base, standin = clickhouse_server(args.clickhouse, work)
    database = f"bench_{args.events}"
    env = {"MILLIMETRIC_CLICKHOUSE_URL": f"{base}/{database}"}
    parts = urlsplit(base)
    client = clickhouse_connect.get_client(host=parts.hostname, port=parts.port, username=parts.username or "default",
                                           password=parts.password or "", secure=parts.scheme == "https")
    try:
        client.command(f"DROP DATABASE IF EXISTS {database}")
        data_dir = work / "data-clickhouse"
        shutil.rmtree(data_dir, ignore_errors=True)
        data_dir.mkdir(parents=True)
        print(f"loading {args.events:,} events into ClickHouse through `millimetric import` ...", file=sys.stderr)
        meta = load(data_dir, args.events, end, env)
        client.command(f"OPTIMIZE TABLE {database}.events FINAL")  # merged parts, as a server has them after a while
        stored = int(client.query(f"SELECT count() FROM {database}.events").result_rows[0][0])
        size = int(client.query(
            "SELECT sum(bytes_on_disk) FROM system.parts WHERE database = {d:String} AND table = 'events' AND active",
            parameters={"d": database}).result_rows[0][0])
        proc, url = serve(data_dir, env)
        try:
            figures = time_queries(url, meta["keys"]["rk"], end, user, args.runs)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(60)
    finally:
        client.close()
        if standin is not None:
            standin.stop()
    return {
        "server": "stand-in (chDB behind HTTP, one query at a time)" if standin else base.split("@")[-1],
        "load_seconds": meta["load_seconds"],
        "load_events_per_s": round(args.events / meta["load_seconds"]),
        "stored": stored,
        "bytes": size,
        "bytes_per_event": round(size / max(stored, 1), 1),
        "queries": figures,
    }


if __name__ == "__main__":
    main()
