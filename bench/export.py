"""Export and import benchmark: events per second and peak memory of `millimetric export` (both
formats) and `millimetric import --export`, at two sizes, to show memory stays flat as N grows.

    .venv/bin/python bench/export.py [--events 200000,800000]

For each size: a fresh data directory, a project made with the CLI, N synthetic events appended
straight to the event store (every column filled, a few hundred visitors over 90 days), then each
command in a process of its own under `/usr/bin/time -v` (its maximum resident set size), and the
import into a second fresh data directory. Prints the machine it ran on.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from millimetric.events.model import EventRow
from millimetric.settings import Settings
from millimetric.store.factory import open_event_store

APPEND_ROWS = 20_000


def _cli(*args: str, data_dir: Path) -> tuple[float, float, str]:
    """Seconds and peak RSS (MiB) of one CLI command, and its stdout."""
    started = time.monotonic()
    done = subprocess.run(
        ["/usr/bin/time", "-v", sys.executable, "-m", "millimetric", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    seconds = time.monotonic() - started
    peak_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))  # type: ignore[union-attr]
    return seconds, peak_kib / 1024, done.stdout


def _rows(project_id: str, n: int, rng: random.Random) -> list[EventRow]:
    start = dt.datetime(2026, 1, 1)
    rows = []
    for i in range(n):
        visitor = rng.randrange(500)
        rows.append(
            EventRow(
                project_id=project_id,
                timestamp=start + dt.timedelta(seconds=i * 90 * 86_400 // n, microseconds=rng.randrange(1_000_000)),
                event_name=rng.choice(["$pageview", "$pageview", "signup", "purchase"]),
                event_id=f"evt-{i}",
                anonymous_id=f"visitor-{visitor}",
                user_id=f"user-{visitor}" if visitor % 5 == 0 else None,
                source=rng.choice(["google", "direct", "newsletter", "facebook"]),
                medium=rng.choice(["organic", "direct", "email", "paid"]),
                campaign=rng.choice([None, "spring", "launch"]),
                source_confidence="high",
                source_rule_id="bench",
                referrer=rng.choice([None, "https://www.google.com/"]),
                url=f"https://shop.example.com/p/{i % 300}",
                path=f"/p/{i % 300}",
                country=rng.choice(["DE", "FR", "US"]),
                device_type=rng.choice(["desktop", "mobile"]),
                browser=rng.choice(["chrome", "firefox", "safari"]),
                os=rng.choice(["windows", "macos", "ios"]),
                ip_hash=f"{rng.getrandbits(64):016x}",
                properties=json.dumps({"i": i, "price": i % 100}),
            )
        )
    return rows


def _load(data_dir: Path, project_id: str, n: int) -> None:
    store = open_event_store(Settings.from_env(environ={}, data_dir=data_dir))
    rng = random.Random(n)
    try:
        for first in range(0, n, APPEND_ROWS):
            asyncio.run(store.append(_rows(project_id, min(APPEND_ROWS, n - first), rng)))
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", default="200000,800000", help="comma list of sizes")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    for n in (int(size) for size in args.events.split(",")):
        with tempfile.TemporaryDirectory(prefix="millimetric-bench-export-") as work:
            source, target = Path(work) / "source", Path(work) / "target"
            project = json.loads(_cli("projects", "create", "bench", "--json", data_dir=source)[2])["project"]
            _cli("projects", "create", "bench", "--json", data_dir=target)
            _load(source, project["id"], n)
            for file_format in ("ndjson", "parquet"):
                out = Path(work) / f"bench.{file_format}"
                seconds, peak, _ = _cli("export", "--project", "bench", "--format", file_format, "-o", str(out),
                                        data_dir=source)  # fmt: skip
                size = out.stat().st_size / 1024 / 1024
                print(f"{n:>9,} events  export {file_format:<7} {n / seconds:>9,.0f} events/s  "
                      f"peak RSS {peak:>6.0f} MiB  file {size:,.1f} MiB")  # fmt: skip
            seconds, peak, _ = _cli("import", "--export", str(out), "--project", "bench", data_dir=target)
            print(f"{n:>9,} events  import parquet {n / seconds:>9,.0f} events/s  peak RSS {peak:>6.0f} MiB")


if __name__ == "__main__":
    main()
