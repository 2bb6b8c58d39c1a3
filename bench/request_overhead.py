"""What counting and logging one request costs, in microseconds (in-process, no HTTP).

Every request passes `RequestIdMiddleware`, which counts it for `GET /metrics` (a counter and a
histogram in prometheus-client's multiprocess files, as under `serve`) and writes its access line.
This times, per request:
- `metrics.observe_request` alone,
- `logs.access` with the JSON and the text formatter (to /dev/null), and with INFO off (the bench
  servers of bench/ingest.py run at MILLIMETRIC_LOG_LEVEL=warning),
- the whole middleware around an app that only answers 202, with access lines off and on.

usage: python bench/request_overhead.py [--requests N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

_METRICS_DIR = tempfile.mkdtemp(prefix="millimetric-bench-metrics-")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _METRICS_DIR  # before prometheus_client is imported

from millimetric.api.middleware import RequestIdMiddleware  # noqa: E402
from millimetric.operations import logs, metrics  # noqa: E402


def per_call_us(work: Callable[[], object], calls: int, rounds: int = 5) -> float:
    """Median over `rounds` of the mean microseconds per call."""
    figures = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(calls):
            work()
        figures.append((time.perf_counter() - started) / calls * 1e6)
    return round(statistics.median(figures), 2)


def _log_to_devnull(log_format: str, level: str) -> None:
    """Log lines go to stderr (file descriptor 2), pointed at /dev/null while timing."""
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    logs.configure(level, log_format)


async def _answer(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 202, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"ok":true}'})


def middleware_us(requests: int) -> float:
    app = RequestIdMiddleware(_answer)
    scope = {"type": "http", "method": "POST", "path": "/v1/track", "headers": [(b"host", b"x")]}

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_message: Any) -> None:
        return None

    async def run() -> float:
        figures = []
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(requests):
                await app(dict(scope), receive, send)
            figures.append((time.perf_counter() - started) / requests * 1e6)
        return round(statistics.median(figures), 2)

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=50_000)
    args = parser.parse_args()
    n = args.requests
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    results: dict[str, float] = {}
    results["observe_request (counter + histogram, multiprocess files)"] = per_call_us(
        lambda: metrics.observe_request("/v1/track", "POST", 202, 0.0012), n
    )
    stderr = os.dup(2)
    for name in ("json", "text"):
        _log_to_devnull(name, "info")
        results[f"access line, {name}"] = per_call_us(
            lambda: logs.access("0123456789abcdef", "POST", "/v1/track", "/v1/track", 202, 0.0012), n
        )
    _log_to_devnull("text", "warning")
    results["access line, INFO off"] = per_call_us(
        lambda: logs.access("0123456789abcdef", "POST", "/v1/track", "/v1/track", 202, 0.0012), n
    )
    results["middleware + 202 app, access lines off"] = middleware_us(n)
    _log_to_devnull("json", "info")
    results["middleware + 202 app, JSON access lines"] = middleware_us(n)
    logs.flush()
    os.dup2(stderr, 2)
    for name, us in results.items():
        print(f"{name:<60} {us:>7.2f} us/request")
    for stale in Path(_METRICS_DIR).glob("*.db"):
        stale.unlink()
    os.rmdir(_METRICS_DIR)


if __name__ == "__main__":
    main()
