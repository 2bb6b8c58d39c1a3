"""Delete benchmark: forget one heavy user while /v1/track is under load and dashboards keep reading.

    .venv/bin/python bench/delete.py [--events 10000000] [--reuse] [--rate 1000] [--connections 16] ...

A quick run: `.venv/bin/python bench/delete.py --events 200000` (about a minute). The default, 10
million events of which the forgotten user owns 1 million, spends about 12 minutes loading on the
2-core bench VM; `--reuse` keeps the loaded data directory for the next runs (each run works on a
fresh copy of it, since a run deletes the user): `.venv/bin/python bench/delete.py --reuse`.

What it does, in order:
1. loads N events (bench/results/delete-<N>/loaded; `--reuse` keeps an already loaded one) with a
   project made with the CLI (`projects create --json`) and `millimetric import - --project bench`
   fed as NDJSON on stdin: bench/query.py's synthetic traffic over the 12 months before today,
   except that one user, `bench-forget-user`, owns `--user-share` (10%) of the events, spread evenly
   over the year: a few devices (anonymous_ids), each linked to the user by a `$identify` on its
   first visit, some visits logged in (user_id on the events) and some not (anonymous_id only; the
   forget finds those through the identify);
2. copies the loaded directory to bench/results/delete-<N>/run and starts `millimetric serve` on
   the copy (rate limits off); wrk (bench/lua/post.lua, 1 thread, 16 connections; each connection
   waits connections * 1000 / `--rate` ms after a response, so at most about `--rate` requests/s)
   POSTs a small event to /v1/track: a warm-up, then a baseline window (`--baseline` seconds) while
   a read, GET /v1/stats?metric=count over the 12 months with the rk_ key, is issued every second,
   and a timed /v1/track probe is sent every `--probe-every` seconds beside wrk;
3. starts wrk again, and `--lead` seconds later POSTs /v1/forget {"user_id": "bench-forget-user"}
   with the sk_ key; issues the same read right after the job is queued and then every second
   (each on its own connection: a stalled read does not hold back the next), sends the probes, and
   polls GET /v1/forget/{job_id} every `--poll` seconds until the job is `done` (or has failed
   `--give-up-after` attempts: the server retries a failed job); `--tail` seconds later it stops
   wrk (SIGINT: wrk reports what it measured), so wrk's window covers the whole delete, from the
   request (the server holds a job a few seconds before it starts, until every process has the
   user's tombstone) to `done`;
4. checks the user is gone (GET /v1/query?user_id=... finds no row), stops the server (SIGTERM);
5. prints the machine (CPU model, cores, RAM), the deleted row count and the delete's duration
   (request to done; the delete itself from the job's started_at if its status has one, else
   bracketed by the polls), /v1/track p50/p99/max and non-2xx (503) answers in the baseline and
   during the delete (wrk's window, and the probes sent while the job ran), each read's latency
   and status, the targets and whether each is met, and writes everything (every read, probe and
   poll too) to bench/results/delete-<N>/results-<timestamp>.json; the server's log is kept beside.

Targets: /v1/track p99 < 50 ms during the delete with no non-2xx answer (no 503) and no timeout;
every read issued during the delete answered 2xx.

How to read the figures: wrk's delete window also holds `--lead` + `--tail` seconds of ordinary
traffic and the time the job waits before it starts, so on a small data set, whose delete takes
well under a second, the window is mostly ordinary traffic: its max latency shows a stall, if any,
and the probes sent while the job ran show the delete alone. wrk drops a latency longer than
`--wrk-timeout` from its distribution and counts a timeout instead. The machine is shared: compare
the delete window with the baseline of the same run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import query  # noqa: E402  bench/query.py, beside this file: its synthetic traffic and helpers
from ingest import Server, child_env  # noqa: E402  bench/ingest.py: the server process and its environment

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
LUA_SCRIPT = ROOT / "bench" / "lua" / "post.lua"
PROJECT = "bench"
FORGET_USER = "bench-forget-user"
WRK_MARK = "WRK_JSON "

TARGET_TRACK_P99_MS = 50.0


# The data set -------------------------------------------------------------------------------------
class ForgetGenerator(query.Generator):
    """bench/query.py's synthetic traffic, in which one user owns `share` of the events.

    Visits are handed to the user as they are generated (whenever the user's events fall below
    `share` of those so far), so the user's events are spread evenly over the year and over the
    table's row groups: the delete has to find them everywhere. The user uses `devices` browsers;
    the first visit from each starts with a `$identify` linking its anonymous_id to the user; later
    visits are logged in (user_id on every event) or not (anonymous_id only) half the time each."""

    def __init__(self, n: int, end: dt.datetime, share: float, devices: int, seed: int = 11) -> None:
        super().__init__(n, end, seed)
        self.share = share
        self.devices = [
            {"anonymous_id": f"bench-forget-device-{i}",
             "context": {"ip": self._ip(10_000_000 + i), "user_agent": query.USER_AGENTS[i % len(query.USER_AGENTS)][1]}}
            for i in range(devices)
        ]
        self.identified: set[int] = set()
        self.total = 0
        self.user_events = 0
        self.user_identifies = 0

    def _session(self, visitor: int, start_ms: int, size: int) -> list[tuple[int, dict[str, Any]]]:
        events = super()._session(visitor, start_ms, size)
        self.total += len(events)
        if self.user_events + len(events) > self.share * self.total or not self.devices:
            return events
        if any(event["event"] == "$identify" for _, event in events):
            return events  # another user's first visit: keep their identify
        device = self.rng.randrange(len(self.devices))
        anonymous_id, context = self.devices[device]["anonymous_id"], self.devices[device]["context"]
        logged_in = self.rng.random() < 0.5
        for _, event in events:
            event["anonymous_id"], event["context"] = anonymous_id, context
            if logged_in:
                event["user_id"] = FORGET_USER
            else:
                event.pop("user_id", None)
        if device not in self.identified:  # the device's first visit starts with the identify
            self.identified.add(device)
            self.user_identifies += 1
            events[0] = (events[0][0], {"event": "$identify", "anonymous_id": anonymous_id,
                                        "user_id": FORGET_USER, "context": context})
        self.user_events += len(events)
        return events


def cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "millimetric", *args, "--data-dir", str(data_dir)],
                          capture_output=True, env=child_env(), cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(f"`millimetric {' '.join(args)}` failed ({proc.returncode}):\n{proc.stderr.decode()}")
    return proc


def load(work: Path, data_dir: Path, args: argparse.Namespace, end: dt.datetime) -> dict[str, Any]:
    """Create the project and pipe N generated events through `millimetric import -`."""
    keys = json.loads(cli(data_dir, "projects", "create", PROJECT, "--json").stdout)["keys"]
    log_path = work / "import.log"
    started = time.perf_counter()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "millimetric", "import", "-", "--project", PROJECT, "--json",
             "--rejects", str(work / "import.rejected.ndjson"), "--data-dir", str(data_dir)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=child_env(), cwd=ROOT,
        )
    assert proc.stdin is not None and proc.stdout is not None
    generator = ForgetGenerator(args.events, end, args.user_share, args.devices)
    chunk: list[bytes] = []
    piped, told = 0, time.monotonic()
    every = max(100_000, args.events // 20)
    try:
        for line in generator.lines():
            chunk.append(line)
            if len(chunk) == 2000:
                proc.stdin.write(b"".join(chunk))
                piped += len(chunk)
                chunk = []
                if piped % every < 2000 or time.monotonic() - told >= 60:
                    told = time.monotonic()
                    elapsed = time.perf_counter() - started
                    rate = piped / elapsed
                    left = (args.events - piped) / rate
                    left_text = f"{left:.0f} s" if left < 120 else f"{left / 60:.0f} min"
                    print(f"  {piped:>12,} of {args.events:,} events piped into import ({piped / args.events:.0%}), "
                          f"{rate:,.0f}/s, about {left_text} left", flush=True)
        proc.stdin.write(b"".join(chunk))
        proc.stdin.close()
    except BrokenPipeError:
        pass  # import died: its exit code and log say why
    summary = json.loads(proc.stdout.read() or b"{}")
    if proc.wait() != 0:
        sys.exit(f"import failed ({proc.returncode}):\n{log_path.read_text(errors='replace')[-3000:]}")
    seconds = time.perf_counter() - started
    return {
        "keys": keys, "import": summary, "load_seconds": round(seconds, 1), "end": end.isoformat(),
        "events": args.events, "user_id": FORGET_USER, "user_events": generator.user_events,
        "user_identifies": generator.user_identifies, "user_devices": len(generator.devices),
        "user_share": args.user_share,
    }


# The server ---------------------------------------------------------------------------------------
def server_log_problems(path: Path, keep: int = 10) -> dict[str, Any]:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return {"problem_lines": 0, "first": []}
    bad = [line for line in lines if any(w in line for w in ("ERROR", "WARNING", "CRITICAL", "Traceback"))]
    return {"problem_lines": len(bad), "first": bad[:keep]}


# wrk ----------------------------------------------------------------------------------------------
def write_bodies(path: Path, count: int = 64) -> int:
    """Small valid /v1/track bodies, one per line (visitors other than the forgotten user)."""
    lines = [json.dumps({"event": "$pageview", "anonymous_id": f"bench-live-{i:04d}",
                         "url": f"https://shop.example.com/p/{i}", "properties": {"plan": "pro"}},
                        separators=(",", ":")) for i in range(count)]
    path.write_text("\n".join(lines) + "\n")
    return round(sum(len(line) for line in lines) / len(lines))


class Wrk:
    """wrk in the background for `seconds` or until stop() (SIGINT: wrk prints what it measured)."""

    started_ones: list[Wrk] = []

    def __init__(self, args: argparse.Namespace, url: str, token: str, bodies: Path, seconds: float) -> None:
        cmd = [args.wrk, f"-t{args.threads}", f"-c{args.connections}", f"-d{max(1, round(seconds))}s",
               "--timeout", f"{args.wrk_timeout:g}s", "-s", str(LUA_SCRIPT), url, "--", token, str(bodies)]
        if args.delay_ms > 0:
            cmd.append(f"{args.delay_ms:g}")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.started = time.monotonic()
        Wrk.started_ones.append(self)

    @classmethod
    def kill_all(cls) -> None:
        """Any wrk still running (an error cut the run short)."""
        for wrk in cls.started_ones:
            if wrk.proc.poll() is None:
                wrk.proc.kill()
                wrk.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)

    def result(self, timeout: float) -> dict[str, Any]:
        out, err = self.proc.communicate(timeout=timeout)
        line = next((x for x in out.splitlines() if x.startswith(WRK_MARK)), None)
        if line is None:
            raise RuntimeError(f"wrk failed ({self.proc.returncode}):\n{out}\n{err}")
        run = json.loads(line[len(WRK_MARK):])
        seconds = run["duration_us"] / 1e6
        lat = run["latency_us"]
        return {
            "seconds": round(seconds, 2),
            "requests": run["requests"],
            "requests_per_s": round(run["requests"] / seconds, 1) if seconds else 0.0,
            "p50_ms": round(lat["p50"] / 1000, 2),
            "p99_ms": round(lat["p99"] / 1000, 2),
            "p999_ms": round(lat["p999"] / 1000, 2),
            "max_ms": round(lat["max"] / 1000, 2),
            "mean_ms": round(lat["mean"] / 1000, 2),
            "non_2xx": run["errors"]["status"],  # wrk counts status >= 400
            "timeouts": run["errors"]["timeout"],
            "socket_errors": {k: v for k, v in run["errors"].items() if k not in ("status", "timeout")},
            "wrk": run,
        }


# Reads --------------------------------------------------------------------------------------------
class Reader:
    """Issues the read every `every` seconds from start() until stop(), each on its own thread and
    connection (a stalled read does not delay the next one); records when each was issued (seconds
    after `origin`), its status, latency and the count it answered."""

    def __init__(self, url: str, rk: str, params: dict[str, str], every: float, timeout: float, origin: float) -> None:
        self.url, self.params, self.every, self.timeout, self.origin = url, params, every, timeout, origin
        self.headers = {"Authorization": f"Bearer {rk}"}
        self.results: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._ticker = threading.Thread(target=self._tick, daemon=True)

    def start(self) -> None:
        self._ticker.start()

    def halt(self) -> None:
        """No new reads from now on."""
        self._stop.set()

    def stop(self) -> None:
        """No new reads; wait for those under way (up to their timeout)."""
        self._stop.set()
        self._ticker.join()
        for thread in self._threads:
            thread.join(self.timeout + 5)
        self.results.sort(key=lambda r: r["issued_s"])

    def _tick(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            thread = threading.Thread(target=self._read_once, daemon=True)
            thread.start()
            self._threads.append(thread)
            next_at += self.every
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _read_once(self) -> None:
        issued = time.monotonic()
        entry: dict[str, Any] = {"issued_s": round(issued - self.origin, 3)}
        try:
            with httpx.Client(timeout=self.timeout) as client:
                resp = client.get(f"{self.url}/v1/stats", params=self.params, headers=self.headers)
            entry["status"] = resp.status_code
            if resp.status_code == 200:
                entry["count"] = sum(row.get("value", 0) for row in resp.json().get("rows", []))
            else:
                entry["error"] = resp.text[:300]
        except httpx.HTTPError as exc:
            entry["status"] = None
            entry["error"] = f"{type(exc).__name__}: {exc}"[:300]
        entry["latency_ms"] = round((time.monotonic() - issued) * 1000, 1)
        entry["answered_s"] = round(time.monotonic() - self.origin, 3)
        with self._lock:
            self.results.append(entry)


def read_summary(reads: list[dict[str, Any]]) -> dict[str, Any]:
    times = [r["latency_ms"] for r in reads]
    return {
        "reads": len(reads),
        "ok": sum(1 for r in reads if r["status"] is not None and 200 <= r["status"] < 300),
        "p50_ms": query.percentile(times, 0.5) if times else None,
        "max_ms": max(times) if times else None,
    }


class TrackProbe:
    """POSTs one /v1/track every `every` seconds on one keep-alive connection beside wrk, recording
    when each was sent (seconds after `origin`), its latency and status: unlike wrk's totals, these
    can be matched to the time the job was running."""

    def __init__(self, url: str, sk: str, every: float, timeout: float, origin: float) -> None:
        self.url, self.every, self.timeout, self.origin = f"{url}/v1/track", every, timeout, origin
        self.headers = {"Authorization": f"Bearer {sk}", "Content-Type": "application/json"}
        self.body = json.dumps({"event": "$pageview", "anonymous_id": "bench-probe",
                                "url": "https://shop.example.com/probe"}).encode()
        self.results: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.timeout + 5)

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout, headers=self.headers) as client:
            next_at = time.monotonic()
            while not self._stop.is_set():
                sent = time.monotonic()
                try:
                    status = client.post(self.url, content=self.body).status_code
                except httpx.HTTPError:
                    status = None
                now = time.monotonic()
                self.results.append({"sent_s": round(sent - self.origin, 3), "status": status,
                                     "latency_ms": round((now - sent) * 1000, 2)})
                next_at = max(next_at + self.every, now)
                self._stop.wait(max(0.0, next_at - now))


def probe_summary(probes: list[dict[str, Any]]) -> dict[str, Any]:
    times = [p["latency_ms"] for p in probes]
    return {
        "probes": len(probes),
        "non_2xx": sum(1 for p in probes if p["status"] is None or not 200 <= p["status"] < 300),
        "p50_ms": query.percentile(times, 0.5) if times else None,
        "p99_ms": query.percentile(times, 0.99) if times else None,
        "max_ms": max(times) if times else None,
    }


# Main ---------------------------------------------------------------------------------------------
def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--events", type=int, default=10_000_000, help="events to load (default 10,000,000)")
    p.add_argument("--reuse", action="store_true", help="reuse an already loaded data directory of this size")
    p.add_argument("--user-share", type=float, default=0.10,
                   help="share of the events that belong to the forgotten user (default 0.10)")
    p.add_argument("--devices", type=int, default=5, help="anonymous_ids linked to the user (default 5)")
    p.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    p.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    p.add_argument("--rate", type=float, default=1000,
                   help="pace wrk to about this many /v1/track requests/s (default 1000; 0: as fast as the "
                        "connections go)")
    p.add_argument("--warmup", type=float, default=3, help="wrk warm-up seconds (default 3)")
    p.add_argument("--baseline", type=float, default=10, help="baseline window seconds, no delete (default 10)")
    p.add_argument("--lead", type=float, default=2, help="seconds of load before the forget request (default 2)")
    p.add_argument("--tail", type=float, default=1, help="seconds of load after the job is done (default 1)")
    p.add_argument("--read-every", type=float, default=1.0, help="seconds between reads (default 1)")
    p.add_argument("--read-timeout", type=float, default=120, help="a read's timeout, seconds (default 120)")
    p.add_argument("--probe-every", type=float, default=0.05,
                   help="seconds between the timed /v1/track probes sent beside wrk (default 0.05)")
    p.add_argument("--poll", type=float, default=0.25, help="seconds between job status polls (default 0.25)")
    p.add_argument("--delete-timeout", type=float, default=3600,
                   help="longest wait from the forget request to done, seconds (default 3600)")
    p.add_argument("--give-up-after", type=int, default=3,
                   help="stop waiting once the job has failed this many attempts (the server retries; default 3)")
    p.add_argument("--wrk-timeout", type=float, default=60,
                   help="wrk request timeout, seconds (default 60): longer requests count as timeouts")
    p.add_argument("--workers", type=int, default=1, help="server processes (MILLIMETRIC_WORKERS; default 1)")
    p.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                   help="extra environment for the server (repeatable)")
    p.add_argument("--keep", action="store_true", help="keep the run's copy of the data directory")
    p.add_argument("--wrk", default="wrk", help="path to wrk (default: wrk on PATH)")
    args = p.parse_args()
    if not shutil.which(args.wrk):
        p.error(f"wrk not found ({args.wrk}); `apt-get install wrk`")
    if not 0 < args.user_share < 1:
        p.error("--user-share must be between 0 and 1")
    args.delay_ms = round(args.connections * 1000 / args.rate) if args.rate > 0 else 0
    return args


def machine() -> dict[str, Any]:
    info = query.machine()
    try:
        info["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                            cwd=ROOT, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        info["git_commit"] = "?"
    try:
        info["wrk"] = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split("\n")[0].strip()
    except OSError:
        info["wrk"] = "?"
    info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return info


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} ms"


def print_track(label: str, f: dict[str, Any]) -> None:
    line = (f"{label}: {f['requests_per_s']:,.0f} req/s over {f['seconds']:g} s, p50 {f['p50_ms']:.2f} ms, "
            f"p99 {f['p99_ms']:.2f} ms, max {f['max_ms']:.2f} ms, non-2xx {f['non_2xx']}, timeouts {f['timeouts']}")
    if sum(f["socket_errors"].values()):
        line += f", socket errors {f['socket_errors']}"
    print(line)


def elapsed_between(a: str | None, b: str | None) -> float | None:
    if not a or not b:
        return None
    return round((dt.datetime.fromisoformat(b) - dt.datetime.fromisoformat(a)).total_seconds(), 3)


def main() -> int:
    args = parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    stamp = dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    work = RESULTS_DIR / f"delete-{args.events}"
    loaded, run_dir, meta_path = work / "loaded", work / "run", work / "load.json"
    m = machine()
    print(f"machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM; Python {m['python']}; "
          f"commit {m['git_commit']}; {m['wrk']}; load average {m['load_average'][0]:g}")

    if args.reuse and meta_path.exists() and loaded.is_dir():
        meta = json.loads(meta_path.read_text())
        print(f"data: reusing {loaded.relative_to(ROOT)} (loaded in {meta['load_seconds']:,} s)")
        if meta.get("user_share") != args.user_share or meta.get("user_devices") != args.devices:
            print(f"  (loaded with --user-share {meta.get('user_share')} --devices {meta.get('user_devices')}: "
                  "those apply; drop --reuse to load with the new ones)")
    else:
        shutil.rmtree(work, ignore_errors=True)
        loaded.mkdir(parents=True)
        end = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0)
        print(f"loading {args.events:,} events through `millimetric import` "
              f"({args.user_share:.0%} of them {FORGET_USER}'s) ...")
        meta = load(work, loaded, args, end)
        meta_path.write_text(json.dumps(meta, indent=2))
    stored = meta["import"].get("stored", meta["events"])
    size = sum(p.stat().st_size for p in loaded.glob("events.duckdb*"))
    load_rate = round(meta["events"] / meta["load_seconds"]) if meta["load_seconds"] else None
    print(f"data: {meta['events']:,} events generated, {stored:,} stored, {size / 2**20:,.1f} MiB of events.duckdb; "
          f"{FORGET_USER} owns {meta['user_events']:,} ({meta['user_devices']} devices, {meta['user_identifies']} "
          f"$identify); loaded in {meta['load_seconds']:,} s ({load_rate or 0:,} events/s)")
    if meta["import"].get("rejected") or meta["import"].get("dropped"):
        print(f"  import: rejected {meta['import'].get('rejected')}, dropped {meta['import'].get('dropped')}")

    shutil.rmtree(run_dir, ignore_errors=True)
    copy_started = time.monotonic()
    shutil.copytree(loaded, run_dir)
    print(f"copied the loaded data directory for this run in {time.monotonic() - copy_started:.1f} s")
    sk, rk = meta["keys"]["sk"], meta["keys"]["rk"]
    end = dt.datetime.fromisoformat(meta["end"])
    year = {"from": query._iso(end - dt.timedelta(days=365)),
            "to": query._iso(dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) + dt.timedelta(days=1))}
    read_params = {**year, "metric": "count"}

    bodies = work / "track.jsonl"
    body_bytes = write_bodies(bodies)
    extra_env = {"MILLIMETRIC_WORKERS": str(args.workers), **dict(item.split("=", 1) for item in args.server_env)}
    log_path = work / f"server-{stamp}.log"
    server = Server(run_dir, log_path, extra_env)
    results: dict[str, Any] = {
        "benchmark": "delete",
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": m,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "load": {k: v for k, v in meta.items() if k != "keys"},
        "store_bytes": size,
        "track_body_bytes": body_bytes,
    }
    pace = (f"paced to at most about {args.rate:,.0f} req/s ({args.delay_ms} ms between a connection's requests)"
            if args.delay_ms else "unpaced (as fast as the connections go)")
    track_url = f"{server.url}/v1/track"
    try:
        started = time.monotonic()
        server.start(timeout=600.0)  # the first start after a load may migrate the event store
        print(f"server: pid {server.proc.pid} on {server.url}, {args.workers} worker(s), "
              f"healthy after {time.monotonic() - started:.1f} s")
        print(f"wrk: {args.threads} thread(s), {args.connections} connections, {pace}; /v1/track body ~{body_bytes} B")

        if args.warmup > 0:
            Wrk(args, track_url, sk, bodies, args.warmup).result(args.warmup + 60)

        # Baseline: the same load and reads, no delete.
        origin = time.monotonic()
        wrk = Wrk(args, track_url, sk, bodies, args.baseline)
        reader = Reader(server.url, rk, read_params, args.read_every, args.read_timeout, origin)
        reader.start()
        probe = TrackProbe(server.url, sk, args.probe_every, args.wrk_timeout, origin)
        probe.start()
        baseline = wrk.result(args.baseline + args.wrk_timeout + 60)
        probe.stop()
        reader.stop()
        results["baseline"] = {"track": baseline, "reads": reader.results, "read_summary": read_summary(reader.results),
                               "probe_summary": probe_summary(probe.results), "probes": probe.results}
        print_track("baseline /v1/track", baseline)
        pr = results["baseline"]["probe_summary"]
        print(f"baseline /v1/track probes (one every {args.probe_every:g} s beside wrk): {pr['probes']}, "
              f"p50 {ms(pr['p50_ms'])}, p99 {ms(pr['p99_ms'])}, max {ms(pr['max_ms'])}, non-2xx {pr['non_2xx']}")
        rs = results["baseline"]["read_summary"]
        print(f"baseline reads (GET /v1/stats?metric=count, 12 months, one a second): {rs['ok']} of {rs['reads']} "
              f"2xx, p50 {ms(rs['p50_ms'])}, max {ms(rs['max_ms'])}")

        # The delete, under the same load.
        wrk = Wrk(args, track_url, sk, bodies, args.delete_timeout + args.lead + args.tail + 60)
        time.sleep(args.lead)
        client = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {sk}"}, timeout=60)
        requested = time.monotonic()
        resp = client.post("/v1/forget", json={"user_id": FORGET_USER})
        queued = time.monotonic()
        if resp.status_code != 200:
            wrk.stop()
            sys.exit(f"POST /v1/forget answered {resp.status_code}: {resp.text[:500]}")
        job_id = resp.json()["job_id"]
        reader = Reader(server.url, rk, read_params, args.read_every, args.read_timeout, requested)
        reader.start()
        probe = TrackProbe(server.url, sk, args.probe_every, args.wrk_timeout, requested)
        probe.start()
        print(f"forget: job {job_id} queued in {(queued - requested) * 1000:.1f} ms; polling every {args.poll:g} s")
        statuses: list[dict[str, Any]] = []
        first_seen: dict[str, float] = {}
        last_waiting = queued  # the last poll that saw the job waiting (queued, or failed and due again)
        job: dict[str, Any] = {}
        told, attempts_told = time.monotonic(), 0
        while True:
            polled = time.monotonic()
            try:
                r = client.get(f"/v1/forget/{job_id}")
                status = r.json().get("status") if r.status_code == 200 else f"http {r.status_code}"
                if r.status_code == 200:
                    job = r.json()
            except httpx.HTTPError as exc:
                status = f"error {type(exc).__name__}"
            now = time.monotonic()
            statuses.append({"at_s": round(now - requested, 3), "status": status,
                             "latency_ms": round((now - polled) * 1000, 1)})
            first_seen.setdefault(status, now)
            if status not in ("running", "done"):
                last_waiting = now
            if status == "failed" and job.get("attempts", 0) > attempts_told:
                attempts_told = job["attempts"]
                print(f"  attempt {attempts_told} failed after {now - requested:,.1f} s: {job.get('last_error')}")
            if status == "done":
                break
            if status == "failed" and ("attempts" not in job or job["attempts"] >= args.give_up_after):
                break  # a server that does not retry, or this many failed attempts: report them
            if now - requested > args.delete_timeout:
                status = "timed out"
                break
            if now - told >= 30:
                told = now
                print(f"  job {status} after {now - requested:,.0f} s")
            time.sleep(args.poll)
        done_at = first_seen.get(status, time.monotonic())
        reader.halt()  # the reads issued up to now are the ones during the delete
        probe.stop()
        time.sleep(args.tail)
        wrk.stop()
        during = wrk.result(args.wrk_timeout + 60)
        reader.stop()
        client.close()

        # Reads issued from the request until done was seen are the ones "during the delete".
        window_end = done_at - requested
        reads_during = [r for r in reader.results if r["issued_s"] <= window_end]
        delete_seconds, delete_basis = None, None
        if job.get("started_at") and job.get("finished_at"):
            delete_seconds, delete_basis = elapsed_between(job["started_at"], job["finished_at"]), "job started_at -> finished_at"
        elif status == "done" and last_waiting < done_at:
            # polls bracket the (last) attempt: it started after the last poll that saw the job waiting
            delete_seconds = round(done_at - last_waiting, 3)
            delete_basis = f"at most: last poll seeing the job waiting -> first seeing it done, polls every {args.poll:g} s"
        delete = {
            "job_id": job_id,
            "status": status,
            "deleted_rows": job.get("deleted_rows"),
            "expected_rows": meta["user_events"],
            "post_forget_ms": round((queued - requested) * 1000, 1),
            "request_to_done_s": round(done_at - requested, 3),
            "server_created_to_finished_s": elapsed_between(job.get("created_at"), job.get("finished_at")),
            "delete_s": delete_seconds,
            "delete_s_basis": delete_basis,
            "queued_s": round(first_seen["running"] - requested, 3) if "running" in first_seen else None,
            "attempts": job.get("attempts"),
            "last_error": job.get("last_error"),
            "job": job,
            "polls": statuses,
        }
        results["delete"] = delete
        # The (last) attempt ran between the last poll that saw the job waiting and the first that saw it done.
        ran_from, ran_to = last_waiting - requested, done_at - requested
        probes_running = [p for p in probe.results if ran_from <= p["sent_s"] <= ran_to]
        results["during_delete"] = {
            "track": during,
            "window": {"lead_s": args.lead, "request_to_done_s": delete["request_to_done_s"], "tail_s": args.tail},
            "reads": reads_during,
            "read_summary": read_summary(reads_during),
            "reads_after_done": [r for r in reader.results if r["issued_s"] > window_end],
            "probes_while_running": {"from_s": round(ran_from, 3), "to_s": round(ran_to, 3),
                                     **probe_summary(probes_running)},
            "probes": probe.results,
        }

        # The user is gone?
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {rk}"}, timeout=args.read_timeout) as c:
            left = c.get("/v1/query", params={**year, "user_id": FORGET_USER, "limit": "1000"})
            after = c.get("/v1/stats", params=read_params)
        results["after"] = {
            "user_rows_left": len(left.json().get("rows", [])) if left.status_code == 200 else None,
            "user_query_status": left.status_code,
            "count": sum(row.get("value", 0) for row in after.json().get("rows", [])) if after.status_code == 200 else None,
        }
    finally:
        Wrk.kill_all()
        code, stop_seconds = server.stop(timeout=600.0)
    results["server_stop"] = {"exit_code": code, "seconds": stop_seconds}
    results["server_log"] = server_log_problems(log_path)

    # Report -------------------------------------------------------------------------------------
    d, w = results["delete"], results["during_delete"]
    print(f"delete: job {d['status']}, {d['deleted_rows'] if d['deleted_rows'] is not None else '?'} rows deleted "
          f"(the user owned {d['expected_rows']:,}); request -> done {d['request_to_done_s']:,.2f} s "
          f"(server's created_at -> finished_at {d['server_created_to_finished_s']} s)")
    if d["queued_s"] is not None:
        print(f"  the job was first seen running {d['queued_s']:,.2f} s after the request")
    if d["attempts"] is not None and (d["attempts"] > 1 or d["last_error"]):
        print(f"  attempts: {d['attempts']}; last error: {d['last_error']}")
    if d["delete_s"] is not None:
        print(f"  the delete itself: {d['delete_s']:,.2f} s ({d['delete_s_basis']})")
    else:
        print("  the delete itself: not measured (the job status has no started_at and the job did not finish)")
    slow_polls = [p for p in d["polls"] if p["latency_ms"] > 1000]
    if slow_polls:
        print(f"  {len(slow_polls)} status poll(s) took over 1 s, the slowest {max(p['latency_ms'] for p in slow_polls):,.0f} ms")
    print_track(f"/v1/track during the delete (window {args.lead:g} s before the request to {args.tail:g} s after done)",
                w["track"])
    pr = w["probes_while_running"]
    print(f"/v1/track probes (one every {args.probe_every:g} s beside wrk) while the job ran "
          f"(+{pr['from_s']:.2f} s to +{pr['to_s']:.2f} s): {pr['probes']}, p50 {ms(pr['p50_ms'])}, "
          f"p99 {ms(pr['p99_ms'])}, max {ms(pr['max_ms'])}, non-2xx {pr['non_2xx']}")
    rs = w["read_summary"]
    print(f"reads issued during the delete (GET /v1/stats?metric=count, 12 months, one a second): {rs['ok']} of "
          f"{rs['reads']} 2xx, p50 {ms(rs['p50_ms'])}, max {ms(rs['max_ms'])}; each (seconds after the forget request):")
    shown = w["reads"]
    if len(shown) > 40:  # a long delete: the first and last ones, the failed and the slowest (all in the JSON)
        slowest = sorted(shown, key=lambda r: -r["latency_ms"])[:10]
        failed = [r for r in shown if not (r["status"] and 200 <= r["status"] < 300)]
        keep = {id(r) for r in shown[:10] + shown[-5:] + slowest + failed}
        shown = [r for r in shown if id(r) in keep]
        print(f"  ({len(w['reads']) - len(shown)} ordinary ones not shown: the first 10, the last 5, the 10 slowest "
              "and every failed one are)")
    for r in shown:
        what = f"count {r['count']:,}" if "count" in r else r.get("error", "")
        print(f"  +{r['issued_s']:7.2f} s  {r['status'] or 'no answer':>9}  {r['latency_ms']:>10,.1f} ms  {what}")
    if not w["reads"]:
        print("  (none)")
    a = results["after"]
    count_now = "?" if a["count"] is None else f"{a['count']:,}"
    print(f"after: {a['user_rows_left']} of {FORGET_USER}'s events found by /v1/query (status {a['user_query_status']}); "
          f"count over 12 months now {count_now}")
    how = "clean" if code in (0, -signal.SIGTERM) else "NOT clean"
    print(f"server stopped by SIGTERM after {stop_seconds:g} s: exit code {code}, {how}")
    if results["server_log"]["problem_lines"]:
        print(f"server log: {results['server_log']['problem_lines']} error/warning lines, first ones:")
        for line in results["server_log"]["first"]:
            print(f"  | {line}")

    t = w["track"]
    checks = [
        {"target": f"/v1/track p99 < {TARGET_TRACK_P99_MS:g} ms during the delete", "value": t["p99_ms"],
         "met": t["p99_ms"] < TARGET_TRACK_P99_MS and t["requests"] > 0},
        {"target": "/v1/track during the delete: no non-2xx (503) answer, no timeout",
         "value": f"non-2xx {t['non_2xx']}, timeouts {t['timeouts']}",
         "met": t["non_2xx"] == 0 and t["timeouts"] == 0},
        {"target": "every read issued during the delete answered 2xx",
         "value": f"{rs['ok']} of {rs['reads']}, latencies " + ", ".join(f"{r['latency_ms']:,.0f} ms" for r in w["reads"][:20])
                  + (", ..." if len(w["reads"]) > 20 else ""),
         "met": rs["reads"] > 0 and rs["ok"] == rs["reads"]},
        {"target": "the job finished and the user's events are gone",
         "value": f"{d['status']}, {a['user_rows_left']} left",
         "met": d["status"] == "done" and a["user_rows_left"] == 0},
    ]
    results["targets"] = checks
    print("targets:")
    for c in checks:
        print(f"  [{'met' if c['met'] else 'MISSED'}] {c['target']}: {c['value']}")

    out = work / f"results-{stamp}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {out.relative_to(ROOT)}")
    if args.keep:
        print(f"kept: {run_dir.relative_to(ROOT)}")
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
