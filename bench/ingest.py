"""Ingest benchmark: a real `millimetric serve` process driven by wrk in another process.

    .venv/bin/python bench/ingest.py [--workers 2] [--duration 10] [--connections 64] [--threads 1] ...

What it does, in order:
1. a fresh temporary data directory; a project made with the CLI (`projects create --json`, whose
   sk key authenticates every request); `millimetric serve` on a free port with rate limits off and
   the bench-only route `POST /bench/noop` enabled (MILLIMETRIC_BENCH_ROUTES=1);
2. per scenario, a warm-up run then a measured run of wrk with bench/lua/post.lua:
   - noop:  POST /bench/noop with the track body (same app and middleware, no work: the ceiling),
   - track: POST /v1/track with a ~400-byte event (name, url with utm params, referrer,
            anonymous_id, properties),
   - batch: POST /v1/batch with --batch-size (100) such events;
   - with --dedup, de-duplication on against off, in the same run (bench/lua/post_unique.lua makes
     a 12-character token unique per event and request in both): track_ids / batch_ids send the
     token as each event's `event_id` (the store checks and remembers every id), track_noid /
     batch_noid send it in a top-level field the server ignores (same bytes, no id);
   The scenario list runs --rounds times (default 3): the VM's speed drifts within minutes, so each
   scenario's figures are its median round, and the track/bare-route ratio is the median of the
   ratios measured within each round;
3. SIGTERM to the server (it drains its queue and checkpoints), then the events table is counted
   read-only with DuckDB for bytes per event on disk;
4. prints the figures, the targets (TARGET_* below) and whether each is met, and writes everything to
   bench/results/ingest-<timestamp>.json.

The server's CPU use during each measured run (the event loop, other threads, and the store
process) and wrk's own CPU use are recorded too: on a 2-core machine the load generator competes with
the server, and these figures tell whether the server was the bottleneck. Before each scenario
the script waits (up to --quiet-wait seconds) until other processes use less than
--quiet-threshold % of a core, and it reports what they used during each run: other sessions'
test suites on the same 2 cores skew every figure. The server CPU per request is the figure least
disturbed by such load.

`--profile` attaches py-spy (`pip install py-spy`) to the server during each measured run and
prints the top functions by own time per thread (speedscope files kept next to the results).
Profiling costs the server throughput: read the figures of a profiled run as evidence of where the
time goes, not as the benchmark result.
"""

from __future__ import annotations

import argparse
import atexit
import collections
import datetime as dt
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pipeline_steps  # bench/pipeline_steps.py, beside this file

ROOT = Path(__file__).resolve().parent.parent
LUA_SCRIPT = ROOT / "bench" / "lua" / "post.lua"
RESULTS_DIR = ROOT / "bench" / "results"
ORIGIN = "https://shop.example.com"
WRK_MARK = "WRK_JSON "

# Targets for the 2-core machine: what the ingest path is expected to sustain.
TARGET_TRACK_RPS = 5_000
TARGET_TRACK_VS_NOOP = 0.40
TARGET_BATCH_EVENTS_PER_S = 100_000
TARGET_TRACK_P99_MS = 25.0

TARGET_ENRICHED_VS_PLAIN = 0.80  # enrichment costs at most 20% of /v1/track requests/s
TARGET_IDS_VS_NOID = 0.90  # de-duplication by event id costs at most 10% of requests/s
UNIQUE_LUA_SCRIPT = ROOT / "bench" / "lua" / "post_unique.lua"
PLACEHOLDER = "@" * 12  # made unique per event by post_unique.lua
DEDUP_SCENARIOS = "track_noid,track_ids,batch_noid,batch_ids"

SCENARIOS = {
    # name: (path, events per request, server settings beyond --server-env)
    "noop": ("/bench/noop", 0, {}),
    "track": ("/v1/track", 1, {}),
    "track_plain": ("/v1/track", 1, {"MILLIMETRIC_ENRICH": "off"}),  # the same, enrichment off
    "batch": ("/v1/batch", None, {}),  # --batch-size
    # --dedup: unique event ids (de-duplication at work) against the same bytes without ids
    "track_noid": ("/v1/track", 1, {}),
    "track_ids": ("/v1/track", 1, {}),
    "batch_noid": ("/v1/batch", None, {}),
    "batch_ids": ("/v1/batch", None, {}),
}
# Scenario -> its bodies (and the field its unique token goes in), for those that need their own.
UNIQUE_BODIES = {
    "track_noid": ("track", "event_ix"),
    "track_ids": ("track", "event_id"),
    "batch_noid": ("batch", "event_ix"),
    "batch_ids": ("batch", "event_id"),
}


# Request bodies ---------------------------------------------------------------------------------
_EVENTS = ["$pageview", "product_viewed", "add_to_cart", "checkout_started", "signup_clicked"]
_PAGES = ["/products/alpine-jacket", "/products/trail-runner-2", "/pricing", "/blog/layering-guide", "/cart"]
_SOURCES = [("newsletter", "email", "autumn_sale"), ("google", "cpc", "brand_search"),
            ("facebook", "paid_social", "retargeting_q4"), ("partner_blog", "referral", "gear_review")]
_REFERRERS = ["https://www.google.com/", "https://news.ycombinator.com/item?id=41234567",
              "https://www.facebook.com/", "https://duckduckgo.com/", "https://t.co/Ab12Cd34Ef"]


def track_event(rng: random.Random) -> dict[str, Any]:
    """One realistic browser event (about 400 bytes of JSON)."""
    source, medium, campaign = rng.choice(_SOURCES)
    anon = "".join(rng.choices(string.ascii_lowercase + string.digits, k=26))
    return {
        "event": rng.choice(_EVENTS),
        "anonymous_id": f"anon_{anon}",
        "url": f"https://shop.example.com{rng.choice(_PAGES)}?utm_source={source}&utm_medium={medium}"
        f"&utm_campaign={campaign}&utm_content=hero_banner",
        "referrer": rng.choice(_REFERRERS),
        "properties": {
            "product_id": f"sku_{rng.randint(10000, 99999)}",
            "category": rng.choice(["outerwear", "footwear", "accessories"]),
            "price": round(rng.uniform(9, 400), 2),
            "currency": "EUR",
            "quantity": rng.randint(1, 3),
            "logged_in": rng.random() < 0.3,
            "experiment": "pdp_layout_v2",
            "variant": rng.choice(["control", "b"]),
        },
    }


def write_bodies(path: Path, count: int, events_per_body: int | None, seed: int, token_field: str | None = None) -> int:
    """`count` distinct bodies, one per line; returns the mean body size in bytes. `token_field`:
    each event gets that field set to PLACEHOLDER (post_unique.lua makes it unique)."""
    rng = random.Random(seed)
    sizes = []

    def event() -> dict[str, Any]:
        return {token_field: PLACEHOLDER, **track_event(rng)} if token_field else track_event(rng)

    with path.open("w") as f:
        for _ in range(count):
            doc = event() if events_per_body is None else {"events": [event() for _ in range(events_per_body)]}
            line = json.dumps(doc, separators=(",", ":"))
            sizes.append(len(line.encode()))
            f.write(line + "\n")
    return round(sum(sizes) / len(sizes))


# The server -------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without any MILLIMETRIC_* setting (no stray database URL etc.)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MILLIMETRIC_")}
    return {**env, **(extra or {})}


def create_project(data_dir: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "millimetric", "projects", "create", "bench", "--origin", ORIGIN, "--json",
         "--data-dir", str(data_dir)],
        capture_output=True, text=True, env=child_env(), cwd=ROOT,
    )
    if proc.returncode != 0:
        sys.exit(f"`millimetric projects create` failed ({proc.returncode}):\n{proc.stderr}")
    return json.loads(proc.stdout)


class Server:
    def __init__(self, data_dir: Path, log_path: Path, extra_env: dict[str, str]) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = child_env({
            "MILLIMETRIC_RATE_LIMITS": "off",
            "MILLIMETRIC_LOG_LEVEL": "warning",
            "MILLIMETRIC_BENCH_ROUTES": "1",
            **extra_env,
        })
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "millimetric", "serve", "--data-dir", str(self.data_dir),
             "--port", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"server exited early ({self.proc.returncode}):\n{self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        self.kill()
        sys.exit(f"server did not become healthy in {timeout:.0f}s:\n{self.log_path.read_text()}")

    def stop(self, timeout: float = 120.0) -> tuple[int | None, float]:
        """SIGTERM (the server drains and checkpoints); returns (exit code, seconds it took)."""
        if self.proc is None or self.proc.poll() is not None:
            return (self.proc.returncode if self.proc else None), 0.0
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None, time.monotonic() - started
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


# CPU accounting ---------------------------------------------------------------------------------
CLK_TCK = os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """Every process below `pid`: the server's fork server and, under it, the store process."""
    parents: dict[int, list[int]] = collections.defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except (FileNotFoundError, ProcessLookupError):
                continue
            parents[int(stat[stat.rindex(")") + 2:].split()[1])].append(int(entry))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread group of the server: the main thread (the event loop; with
    MILLIMETRIC_WORKERS, every worker's and the supervisor's together) by itself, the others
    (asyncio.to_thread workers, uvloop's) together unless they are named, and the store process
    (DuckDB) with the other child processes."""
    groups: dict[str, float] = collections.defaultdict(float)
    for owner in [pid, *descendants(pid)]:
        try:
            tids = os.listdir(f"/proc/{owner}/task")
            server = owner == pid or b"spawn_main" in Path(f"/proc/{owner}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        for tid in tids:
            try:
                stat = Path(f"/proc/{owner}/task/{tid}/stat").read_text()
            except (FileNotFoundError, ProcessLookupError):
                continue
            comm = stat[stat.index("(") + 1: stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2:].split()
            seconds = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
            if not server:
                name = "store process"
            elif tid == str(owner):
                name = "main (event loop)"
            else:  # Python 3.11 leaves every thread named after the executable: group those as one
                name = "other threads" if comm.startswith("python") else comm
            groups[name] += seconds
    return dict(groups)


def machine_busy() -> float:
    """CPU seconds used by everything on the machine so far (all cores, /proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def process_cpu(pid: int) -> float:
    """CPU seconds of the server and its child processes."""
    return sum(thread_cpu(pid).values())


def wait_until_quiet(server_pid: int, threshold: float, max_wait: float) -> float:
    """Sample the CPU other processes use (percent of one core); wait while it exceeds `threshold`.
    Returns the last sample: other sessions' tests on the same 2 cores skew every figure."""
    started = time.monotonic()
    told = float("-inf")
    while True:
        b0, s0, t0 = machine_busy(), process_cpu(server_pid), time.monotonic()
        time.sleep(1.0)
        other = 100 * ((machine_busy() - b0) - (process_cpu(server_pid) - s0)) / (time.monotonic() - t0)
        if other <= threshold or time.monotonic() - started >= max_wait:
            if other > threshold:
                print(f"  (other processes still use {other:.0f}% of a core after {max_wait:g}s: measuring anyway)")
            return round(other, 1)
        if time.monotonic() - told >= 30:
            print(f"  (other processes use {other:.0f}% of a core; waiting up to {max_wait:g}s for a quiet machine)",
                  flush=True)
            told = time.monotonic()


def cpu_delta(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
    """Percent of one core per thread group over `seconds`, plus the total."""
    out = {name: round(100 * (after.get(name, 0.0) - before.get(name, 0.0)) / seconds, 1) for name in after}
    out = {k: v for k, v in sorted(out.items(), key=lambda kv: -kv[1]) if v >= 0.5}
    out["total"] = round(sum(v for k, v in out.items()), 1)
    return out


# wrk ----------------------------------------------------------------------------------------------
def run_wrk(args: argparse.Namespace, url: str, token: str, bodies: Path, seconds: float,
            unique: bool = False) -> dict[str, Any]:
    """`unique`: post_unique.lua, with a run tag of its own (no token repeats one of another run)."""
    script, extra = (UNIQUE_LUA_SCRIPT, ["".join(random.choices(string.ascii_lowercase, k=4))]) if unique else (LUA_SCRIPT, [])
    cmd = [
        args.wrk, f"-t{args.threads}", f"-c{args.connections}", f"-d{seconds:g}s", "--timeout", f"{args.timeout:g}s",
        "-s", str(script), url, "--", token, str(bodies), *extra,
    ]
    usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    usage_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((out for out in proc.stdout.splitlines() if out.startswith(WRK_MARK)), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    result = json.loads(line[len(WRK_MARK):])
    cpu = (usage_after.ru_utime - usage_before.ru_utime) + (usage_after.ru_stime - usage_before.ru_stime)
    result["wrk_cpu_percent"] = round(100 * cpu / (result["duration_us"] / 1e6), 1)
    result["non_2xx_note"] = "wrk counts status >= 400 as errors.status"
    return result


# py-spy -------------------------------------------------------------------------------------------
def start_profiler(args: argparse.Namespace, pid: int, seconds: float, out: Path) -> subprocess.Popen | None:
    py_spy = args.py_spy or shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists() and not shutil.which(py_spy):
        print("  (py-spy not found: `.venv/bin/pip install py-spy`; profiling skipped)")
        return None
    cmd = [py_spy, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))), "--rate", str(args.profile_rate),
           "--subprocesses", "--format", "speedscope", "--output", str(out)]
    if args.profile_nonblocking:
        cmd.append("--nonblocking")
    return subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


IDLE_FRAMES = {"_worker", "Condition.wait", "Queue.get", "SimpleQueue.get", "Event.wait"}


def summarise_speedscope(path: Path, top: int, seconds: float) -> dict[str, Any]:
    """Per thread: the time py-spy found it active (not idle), and the top functions by own time
    (the innermost frame of each sample) and by total time, as shares of that active time."""
    doc = json.loads(path.read_text())
    frames = doc["shared"]["frames"]

    def label(index: int) -> str:
        f = frames[index]
        file = f.get("file") or ""
        short = "/".join(file.split("/")[-2:]) if file else "?"
        return f"{f['name']} ({short}:{f.get('line', '?')})"

    threads = {}
    for profile in doc["profiles"]:
        own: collections.Counter[str] = collections.Counter()
        total: collections.Counter[str] = collections.Counter()
        weights = profile.get("weights") or [1] * len(profile["samples"])
        count = 0
        for stack, weight in zip(profile["samples"], weights):
            if not stack:
                continue
            count += weight
            own[label(stack[-1])] += weight
            for name in {label(i) for i in stack}:
                total[name] += weight
        if count < 0.01 * seconds:  # a thread that barely ran
            continue
        threads[profile["name"]] = {
            "active_seconds": round(count, 2),  # py-spy's speedscope weights are seconds
            "active_share_of_wall": round(count / seconds, 3),
            "own": [(name, round(100 * n / count, 1)) for name, n in own.most_common(top)],
            "total": [(name, round(100 * n / count, 1)) for name, n in total.most_common(top)],
        }
    return threads


# Machine ------------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=ROOT, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "?"
    try:
        wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    except OSError:
        wrk_version = "?"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": ram_gib,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": commit,
        "wrk": wrk_version.strip(),
    }


# Main ---------------------------------------------------------------------------------------------
def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=10, help="measured seconds per scenario (default 10)")
    p.add_argument("--warmup", type=float, default=3, help="warm-up seconds before each scenario (default 3)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    p.add_argument("--threads", type=int, default=1, help="wrk threads (default 1: the server keeps most of a core)")
    p.add_argument("--timeout", type=float, default=10, help="wrk request timeout in seconds (default 10)")
    p.add_argument("--batch-size", type=int, default=100, help="events per /v1/batch request (default 100)")
    p.add_argument("--bodies", type=int, default=256,
                   help="distinct bodies per scenario, cycled by wrk (default 256; 1 = one fixed body)")
    p.add_argument("--scenarios", default=None,
                   help="comma list, run in this order (default noop,track,track_plain,batch)")
    p.add_argument("--dedup", action="store_true",
                   help=f"de-duplication on against off: the scenarios {DEDUP_SCENARIOS} (unless --scenarios is given)")
    p.add_argument("--rounds", type=int, default=3,
                   help="run the scenario list this many times; figures are each scenario's median round and "
                        "the track/bare ratio is the median of the rounds' ratios (default 3: the VM drifts)")
    p.add_argument("--pause", type=float, default=1.0, help="seconds of rest between runs (the writer drains)")
    p.add_argument("--quiet-threshold", type=float, default=10,
                   help="before each measured run, wait while other processes use more than this %% of a core")
    p.add_argument("--quiet-wait", type=float, default=120, help="longest wait for a quiet machine, seconds")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (data, bodies, server log)")
    p.add_argument("--workers", type=int, default=1,
                   help="server processes (MILLIMETRIC_WORKERS; default 1, the server's default)")
    p.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                   help="extra environment for the server (repeatable), e.g. MILLIMETRIC_QUEUE_LIMIT=100000")
    p.add_argument("--profile", action="store_true", help="py-spy the server during each measured run")
    p.add_argument("--profile-rate", type=int, default=100, help="py-spy samples per second (default 100)")
    p.add_argument("--profile-nonblocking", action="store_true",
                   help="py-spy --nonblocking: less overhead, but stacks can be torn (misattributed frames)")
    p.add_argument("--profile-top", type=int, default=15, help="functions listed per thread (default 15)")
    p.add_argument("--py-spy", default=None, help="path to py-spy (default: PATH, then the venv)")
    p.add_argument("--wrk", default="wrk", help="path to wrk (default: wrk on PATH)")
    p.add_argument("--results", type=Path, default=RESULTS_DIR, help="directory for the JSON results")
    p.add_argument("--clickhouse", metavar="URL",
                   help="also run track and batch on a node over ClickHouse at URL (http://user:pass@host:8123, or "
                        "'standin' for the test stand-in), and time a spool drain into it")
    p.add_argument("--drain-events", type=int, default=1_000_000, help="events in the spool drain (default 1M)")
    args = p.parse_args()
    if args.scenarios is None:
        args.scenarios = DEDUP_SCENARIOS if args.dedup else "noop,track,track_plain,batch"
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if args.clickhouse:
        args.clickhouse_base = clickhouse_server(args.clickhouse)
        database = f"bench_ingest_{os.getpid()}"
        ch_env = {"MILLIMETRIC_CLICKHOUSE_URL": f"{args.clickhouse_base}/{database}"}
        SCENARIOS["track_clickhouse"] = ("/v1/track", 1, ch_env)
        SCENARIOS["batch_clickhouse"] = ("/v1/batch", None, ch_env)
        args.scenarios += [name for name in ("track_clickhouse", "batch_clickhouse") if name.split("_")[0] in args.scenarios]
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        p.error(f"unknown scenario(s) {unknown}; choose from {list(SCENARIOS)}")
    if not shutil.which(args.wrk):
        p.error(f"wrk not found ({args.wrk}); `apt-get install wrk`")
    return args


def main() -> int:
    args = parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # progress shows up when piped to a file too
    stamp = dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    work = Path(tempfile.mkdtemp(prefix="millimetric-bench-"))
    data_dir = work / "data"
    results: dict[str, Any] = {
        "benchmark": "ingest",
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "scenarios": {},
    }
    m = results["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM; Python {m['python']}; "
          f"commit {m['git_commit']}; {m['wrk']}")
    print(f"wrk: {args.threads} thread(s), {args.connections} connections, {args.warmup:g}s warm-up + "
          f"{args.duration:g}s measured per scenario; {args.bodies} distinct bodies per scenario")
    print(f"server: {args.workers} worker process(es)")
    print(f"work dir: {work}")

    bodies = {
        "track": work / "track.jsonl",
        "batch": work / "batch.jsonl",
    }
    track_size = write_bodies(bodies["track"], max(1, args.bodies), None, seed=1)
    batch_size = write_bodies(bodies["batch"], max(1, min(args.bodies, 64)), args.batch_size, seed=2)
    results["body_bytes"] = {"track": track_size, "batch": batch_size}
    print(f"bodies: track ~{track_size} B, batch of {args.batch_size} ~{batch_size} B")
    for name in (n for n in args.scenarios if n in UNIQUE_BODIES):
        kind, field = UNIQUE_BODIES[name]
        bodies[name] = work / f"{name}.jsonl"
        count, per_body = (max(1, args.bodies), None) if kind == "track" else (max(1, min(args.bodies, 64)), args.batch_size)
        results["body_bytes"][name] = write_bodies(bodies[name], count, per_body, 1 if kind == "track" else 2, field)

    extra_env = {"MILLIMETRIC_WORKERS": str(args.workers), **dict(item.split("=", 1) for item in args.server_env)}
    servers: dict[tuple, tuple[Server, str]] = {}  # one server (and sk_ key) per distinct settings

    def server_for(scenario_env: dict[str, str]) -> tuple[Server, str]:
        key = tuple(sorted(scenario_env.items()))
        if key not in servers:
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join(f"{k.removeprefix('MILLIMETRIC_').lower()}-{v}" for k, v in key))
            own_dir = data_dir if not key else work / f"data-{name}"
            token = create_project(own_dir)["keys"]["sk"]
            started = Server(own_dir, work / f"server{'-' + name if key else ''}.log", {**extra_env, **scenario_env})
            started.start()
            assert started.proc is not None
            print(f"server: pid {started.proc.pid} on {started.url} {dict(key) or ''}\n")
            servers[key] = (started, token)
        return servers[key]

    accepted_events = 0
    rounds: list[dict[str, Any]] = [{} for _ in range(args.rounds)]
    try:
        server_for({})
        for round_index, name in ((r, n) for r in range(args.rounds) for n in args.scenarios):
            if args.rounds > 1 and name == args.scenarios[0]:
                print(f"round {round_index + 1} of {args.rounds}")
            path, per_request, scenario_env = SCENARIOS[name]
            per_request = args.batch_size if per_request is None else per_request
            server, token = server_for(scenario_env)
            url = server.url + path
            body_file = bodies[name] if name in UNIQUE_BODIES else bodies["batch" if name == "batch" else "track"]
            unique = name in UNIQUE_BODIES
            quiet_before = wait_until_quiet(server.proc.pid, args.quiet_threshold, args.quiet_wait)
            counted = server.data_dir == data_dir  # storage figures are for the main server
            if args.warmup > 0:
                warm = run_wrk(args, url, token, body_file, args.warmup, unique)
                accepted_events += (warm["requests"] - warm["errors"]["status"]) * per_request * counted
                time.sleep(args.pause)
            profiler = None
            if args.profile:
                profile_path = args.results / f"ingest-{stamp}-{name}-{round_index + 1}.speedscope.json"
                args.results.mkdir(parents=True, exist_ok=True)
                profiler = start_profiler(args, server.proc.pid, args.duration, profile_path)
                time.sleep(0.5)  # let py-spy attach before the load starts
            busy_before = machine_busy()
            cpu_before, t0 = thread_cpu(server.proc.pid), time.monotonic()
            run = run_wrk(args, url, token, body_file, args.duration, unique)
            cpu_after, elapsed = thread_cpu(server.proc.pid), time.monotonic() - t0
            busy = 100 * (machine_busy() - busy_before) / elapsed
            seconds = run["duration_us"] / 1e6
            ok = run["requests"] - run["errors"]["status"]
            accepted_events += ok * per_request * counted
            lat = run["latency_us"]
            figures = {
                "path": path,
                "requests": run["requests"],
                "requests_per_s": round(run["requests"] / seconds, 1),
                "events_per_request": per_request,
                "events_per_s": round(ok * per_request / seconds, 1),
                "p50_ms": round(lat["p50"] / 1000, 2),
                "p99_ms": round(lat["p99"] / 1000, 2),
                "p999_ms": round(lat["p999"] / 1000, 2),
                "max_ms": round(lat["max"] / 1000, 2),
                "mean_ms": round(lat["mean"] / 1000, 2),
                "non_2xx": run["errors"]["status"],
                "socket_errors": {k: v for k, v in run["errors"].items() if k != "status"},
                "server_cpu_percent": cpu_delta(cpu_before, cpu_after, elapsed),
                "wrk_cpu_percent": run["wrk_cpu_percent"],
                # everything else on the machine during the run (other sessions, py-spy...), % of a core
                "other_cpu_percent": max(0.0, round(busy - sum(v for k, v in cpu_delta(cpu_before, cpu_after, elapsed).items()
                                                      if k == "total") - run["wrk_cpu_percent"], 1)),
                "other_cpu_percent_before": quiet_before,
                "wrk": run,
            }
            if profiler is not None:
                _, err = profiler.communicate(timeout=args.duration + 60)
                if profiler.returncode == 0 and profile_path.exists():
                    figures["profile"] = {"speedscope": str(profile_path),
                                          "threads": summarise_speedscope(profile_path, args.profile_top, args.duration)}
                else:
                    print(f"  py-spy failed ({profiler.returncode}): {err.strip()[-500:]}")
            # CPU cost per request, which other load on the machine disturbs far less than rates
            cpu_pct = figures["server_cpu_percent"]
            figures["server_cpu_us_per_request"] = round(cpu_pct["total"] / 100 * elapsed / max(1, run["requests"]) * 1e6, 1)
            figures["event_loop_cpu_us_per_request"] = round(
                cpu_pct.get("main (event loop)", 0.0) / 100 * elapsed / max(1, run["requests"]) * 1e6, 1)
            rounds[round_index][name] = figures
            print_scenario(name, figures)
            time.sleep(args.pause)
    finally:
        for key, (other, _token) in servers.items():
            if key:
                other.stop()
        code, stop_seconds = servers[()][0].stop() if () in servers else (None, 0.0)
    results["rounds"] = rounds
    results["scenarios"] = {name: median_round(rounds, name) for name in args.scenarios}
    results["server_stop"] = {"exit_code": code, "seconds": round(stop_seconds, 2)}
    # uvicorn re-raises the signal once its graceful shutdown is done, hence -15 on a clean stop
    how = "clean (uvicorn re-raises SIGTERM after its graceful shutdown)" if code in (0, -signal.SIGTERM) else "NOT clean"
    print(f"server stopped by SIGTERM after {stop_seconds:.1f}s: exit code {code}, {how}")
    results["pipeline_step_us"] = pipeline_steps.measure(20_000)
    print("per-event cost of each pipeline step (in-process, bench/pipeline_steps.py):")
    for step, us in results["pipeline_step_us"].items():
        print(f"  {step:<16} {us:7.2f} us")
    results["server_log"] = server_log_problems(work / "server.log")
    if results["server_log"]["problem_lines"]:
        print(f"server log: {results['server_log']['problem_lines']} error/warning lines, first ones:")
        for line in results["server_log"]["first"]:
            print(f"  | {line}")

    results["storage"] = storage(data_dir, accepted_events)
    s = results["storage"]
    print(f"storage: {s['stored_events']:,} events stored ({s['accepted_events_counted']:,} answered 2xx "
          f"as counted by wrk), {s['bytes_on_disk']:,} bytes in events.duckdb(+.wal): "
          f"{s['bytes_per_event']} bytes/event")

    results["targets"] = targets(results["scenarios"], rounds)
    print_targets(results["targets"], results["scenarios"], rounds)
    if args.clickhouse:
        results["clickhouse"] = clickhouse_figures(args, rounds, work)

    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / f"ingest-{stamp}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    if args.keep:
        print(f"kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def server_log_problems(path: Path, keep: int = 10) -> dict[str, Any]:
    """Errors and warnings the server logged during the run (it runs at log level warning)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return {"problem_lines": 0, "first": []}
    bad = [line for line in lines if any(w in line for w in ("ERROR", "WARNING", "CRITICAL", "Traceback"))]
    return {"problem_lines": len(bad), "first": bad[:keep]}


def storage(data_dir: Path, accepted: int) -> dict[str, Any]:
    import duckdb

    db = data_dir / "events.duckdb"
    wal = data_dir / "events.duckdb.wal"
    size = sum(p.stat().st_size for p in (db, wal) if p.exists())
    with duckdb.connect(str(db), read_only=True) as con:
        stored = con.execute("SELECT count(*) FROM events").fetchone()[0]
    return {
        "stored_events": stored,
        "accepted_events_counted": accepted,
        "missing": max(0, accepted - stored),  # > 0 would mean a 2xx answered event is not stored
        "bytes_on_disk": size,
        "wal_bytes": wal.stat().st_size if wal.exists() else 0,
        "bytes_per_event": round(size / stored, 1) if stored else None,
    }


def print_scenario(name: str, f: dict[str, Any]) -> None:
    cpu = ", ".join(f"{k} {v:g}%" for k, v in f["server_cpu_percent"].items())
    socket_errors = sum(f["socket_errors"].values())
    line = f"{name:>5}  {f['path']:<12} {f['requests_per_s']:>10,.0f} req/s"
    if f["events_per_request"]:
        line += f"  {f['events_per_s']:>10,.0f} events/s"
    line += f"  p50 {f['p50_ms']:>6.2f} ms  p99 {f['p99_ms']:>6.2f} ms  non-2xx {f['non_2xx']}"
    if socket_errors:
        line += f"  socket errors {f['socket_errors']}"
    print(line)
    print(f"       server CPU: {cpu}; wrk CPU {f['wrk_cpu_percent']:g}%; other processes {f['other_cpu_percent']:g}%")
    print(f"       server CPU per request: {f['server_cpu_us_per_request']:g} us "
          f"(event loop {f['event_loop_cpu_us_per_request']:g} us)")
    if f["other_cpu_percent"] > 15:
        print("       WARNING: the machine was not quiet during this run; its figures are skewed")
    for thread, prof in (f.get("profile") or {}).get("threads", {}).items():
        top_name, top_share = prof["own"][0] if prof["own"] else ("", 0.0)
        if top_share >= 95 and top_name.split(" (")[0] in IDLE_FRAMES:
            continue  # a pool thread parked in its queue: py-spy's blocking mode counts it as active
        print(f"       py-spy {thread}: active {prof['active_seconds']:g}s "
              f"({prof['active_share_of_wall']:.0%} of the run); top functions by own time (share of active):")
        for fn, pct in prof["own"]:
            print(f"         {pct:5.1f}%  {fn}")


def median_round(rounds: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The figures of the round whose requests/s is the median (the lower one of an even count)."""
    ranked = sorted((r[name] for r in rounds), key=lambda f: f["requests_per_s"])
    return ranked[(len(ranked) - 1) // 2]


def paired_ratios(rounds: list[dict[str, Any]], name: str, base: str) -> list[float]:
    """requests/s of `name` over `base` within each round: both ran minutes apart at most."""
    return [r[name]["requests_per_s"] / r[base]["requests_per_s"] for r in rounds
            if name in r and base in r and r[base]["requests_per_s"]]


def targets(scenarios: dict[str, Any], rounds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    track, batch, noop = scenarios.get("track"), scenarios.get("batch"), scenarios.get("noop")
    plain = scenarios.get("track_plain")
    out = []
    if track and plain:
        ratio = statistics.median(paired_ratios(rounds, "track", "track_plain") or [0.0])
        out.append({"target": f"/v1/track enriched >= {TARGET_ENRICHED_VS_PLAIN:.0%} of unenriched requests/s",
                    "value": round(ratio, 3), "met": ratio >= TARGET_ENRICHED_VS_PLAIN})
    if track:
        out.append({"target": f"/v1/track >= {TARGET_TRACK_RPS:,} requests/s",
                    "value": track["requests_per_s"], "met": track["requests_per_s"] >= TARGET_TRACK_RPS})
        out.append({"target": f"/v1/track p99 < {TARGET_TRACK_P99_MS:g} ms",
                    "value": track["p99_ms"], "met": track["p99_ms"] < TARGET_TRACK_P99_MS})
        out.append({"target": "/v1/track all 2xx", "value": track["non_2xx"], "met": track["non_2xx"] == 0})
    if track and noop:
        ratio = statistics.median(paired_ratios(rounds, "track", "noop") or [0.0])
        out.append({"target": f"/v1/track >= {TARGET_TRACK_VS_NOOP:.0%} of /bench/noop requests/s",
                    "value": round(ratio, 3), "met": ratio >= TARGET_TRACK_VS_NOOP})
    for kind in ("track", "batch"):
        if f"{kind}_ids" in scenarios and f"{kind}_noid" in scenarios:
            ratio = statistics.median(paired_ratios(rounds, f"{kind}_ids", f"{kind}_noid") or [0.0])
            out.append({"target": f"/v1/{kind} with event ids (de-duplication) >= {TARGET_IDS_VS_NOID:.0%} of without",
                        "value": round(ratio, 3), "met": ratio >= TARGET_IDS_VS_NOID})
            ids = scenarios[f"{kind}_ids"]
            out.append({"target": f"/v1/{kind} with event ids all 2xx", "value": ids["non_2xx"], "met": ids["non_2xx"] == 0})
    if batch:
        out.append({"target": f"/v1/batch >= {TARGET_BATCH_EVENTS_PER_S:,} events/s",
                    "value": batch["events_per_s"], "met": batch["events_per_s"] >= TARGET_BATCH_EVENTS_PER_S})
        out.append({"target": "/v1/batch all 2xx", "value": batch["non_2xx"], "met": batch["non_2xx"] == 0})
    return out


def clickhouse_server(target: str) -> str:
    """The base URL for `--clickhouse` (a stand-in started for this run, stopped at exit)."""
    if target != "standin":
        return target.rstrip("/")
    sys.path.insert(0, str(ROOT / "tests"))
    from clickhouse_standin import StandInProcess

    work = Path(tempfile.mkdtemp(prefix="millimetric-standin-"))
    standin = StandInProcess(work / "standin", max_threads=0).start()
    atexit.register(standin.stop)  # however the run ends
    return standin.url


def clickhouse_figures(args: argparse.Namespace, rounds: list[dict[str, Any]], work: Path) -> dict[str, Any]:
    """Track and batch over ClickHouse as a ratio to the embedded store (paired within each round),
    and the rate at which a node's spool drains into ClickHouse."""
    out: dict[str, Any] = {}
    for name in ("track", "batch"):
        ratios = paired_ratios(rounds, f"{name}_clickhouse", name)
        if ratios:
            out[f"{name}_ratio"] = round(statistics.median(ratios), 3)
            print(f"clickhouse: {name} requests/s as a ratio to the embedded store by round: "
                  f"{', '.join(f'{r:.1%}' for r in ratios)}; median {statistics.median(ratios):.1%}")
    out["drain"] = spool_drain(args.clickhouse_base, work / "drain", args.drain_events)
    d = out["drain"]
    print(f"clickhouse: spool drain of {d['events']:,} events in {d['seconds']} s: {d['events_per_s']:,} events/s "
          f"(goal >= 100,000 into the stand-in: {'met' if d['events_per_s'] >= 100_000 else 'MISSED'}); "
          f"spooling them took {d['spool_seconds']} s")
    return out


def spool_drain(base: str, work: Path, count: int) -> dict[str, Any]:
    """Spool `count` events while ClickHouse is unreachable, then time a node (a new store on the
    same spool) shipping all of them."""
    import asyncio

    from millimetric.events.model import EventRow
    from millimetric.store.clickhouse.store import ClickHouseEventStore

    rng = random.Random(3)
    now = dt.datetime(2026, 1, 1)
    rows = [EventRow(project_id="bench", timestamp=now + dt.timedelta(milliseconds=i), event_name=rng.choice(_EVENTS),
                     anonymous_id=f"v{rng.randrange(100_000)}", source="google", medium="organic",
                     path=rng.choice(_PAGES), country="DE", device_type="desktop", browser="Chrome", os="Linux",
                     ip_hash=f"{rng.getrandbits(64):016x}", properties='{"plan":"pro"}') for i in range(10_000)]
    spool = work / "spool"
    offline = ClickHouseEventStore("http://127.0.0.1:1/bench_drain", spool, 1 << 40)
    started = time.perf_counter()
    for _ in range(count // len(rows)):
        asyncio.run(offline.append(rows))
    spool_seconds = time.perf_counter() - started
    offline.close(stall_seconds=0.1)
    database = f"bench_drain_{os.getpid()}"
    started = time.perf_counter()
    store = ClickHouseEventStore(f"{base}/{database}", spool, 1 << 40)
    assert store.sync(3600), "the spool did not drain"
    seconds = time.perf_counter() - started
    store.close()
    shipped = count // len(rows) * len(rows)
    return {"events": shipped, "seconds": round(seconds, 2), "events_per_s": round(shipped / seconds),
            "spool_seconds": round(spool_seconds, 2), "includes": "connect and schema creation"}


def print_targets(checks: list[dict[str, Any]], scenarios: dict[str, Any], rounds: list[dict[str, Any]]) -> None:
    if len(rounds) > 1:
        print(f"figures above the targets: each scenario's median round of {len(rounds)}")
        for name in scenarios:
            rates = ", ".join(f"{r[name]['requests_per_s']:,.0f}" for r in rounds if name in r)
            print(f"  {name:>11} requests/s by round: {rates}")
    for name, base in (("track", "noop"), ("track", "track_plain"), ("track_ids", "track_noid"), ("batch_ids", "batch_noid")):
        ratios = paired_ratios(rounds, name, base)
        if ratios:
            shown = ", ".join(f"{r:.1%}" for r in ratios)
            print(f"ratio {name}/{base} by round: {shown}; median {statistics.median(ratios):.1%}")
    for name, base in (("track_ids", "track_noid"), ("batch_ids", "batch_noid")):
        # server CPU per request (its store process included): what other load disturbs least
        costs = [r[name]["server_cpu_us_per_request"] / r[base]["server_cpu_us_per_request"] for r in rounds
                 if name in r and base in r and r[base]["server_cpu_us_per_request"]]
        if costs:
            shown = ", ".join(f"{c:.1%}" for c in costs)
            print(f"server CPU per request {name}/{base} by round: {shown}; median {statistics.median(costs):.1%}")
    noisy = [name for name, f in scenarios.items() if f.get("other_cpu_percent", 0) > 15]
    if noisy:
        print(f"NOTE: other processes loaded the machine during {', '.join(noisy)}: rerun on a quiet machine")
    print("targets (issues 2 and 4):")
    for c in checks:
        value = c["value"]
        shown = f"{value:.1%}" if isinstance(value, float) and value < 1.5 and "of" in c["target"] else f"{value:,}"
        print(f"  [{'met' if c['met'] else 'MISSED'}] {c['target']}: {shown}")


if __name__ == "__main__":
    sys.exit(main())
