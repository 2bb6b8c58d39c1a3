"""Admin API figures: sign-in cost (right password, wrong password, unknown email), admin read
latency, and how long a key revocation takes to reach every worker process.

1. starts `millimetric serve --workers 2` on a fresh data directory (rate limits off; sign-in
   attempts carry a distinct `X-Forwarded-For` each, from a trusted proxy, so the per-address
   limit does not throttle the measurement; each email gets at most its 10 free attempts);
2. times `POST /admin/login` sequentially, `--logins` times per case;
3. times `GET /admin/me` and `GET /admin/projects`, `--reads` times each;
4. `--revocations` times: mints an `rk_` key, reads with it on 40 fresh connections (both workers
   cache it), revokes it, and measures until 40 reads in a row on fresh connections are refused;
5. prints the machine and the figures; a JSON copy goes to `bench/results/`.

The machine is shared: compare figures within one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
import query  # noqa: E402  bench/query.py: machine()
from ingest import ROOT, Server, child_env  # noqa: E402  bench/ingest.py: the server process

RESULTS_DIR = Path(__file__).parent / "results"
PASSWORD = "correct horse battery staple"
WINDOW = {"from": "2024-01-01", "to": "2024-02-01"}


def create_user(data_dir: Path, email: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "millimetric", "users", "create", email, "--password-stdin", "--data-dir", str(data_dir)],
        input=PASSWORD + "\n", capture_output=True, text=True, env=child_env(), cwd=ROOT, check=True,
    )


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p95_ms": round(ordered[max(0, int(len(ordered) * 0.95) - 1)] * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


def time_logins(url: str, cases: dict[str, list[tuple[str, str]]]) -> dict[str, Any]:
    """The cases take turns, attempt by attempt, so that the machine's swings hit them alike."""
    samples: dict[str, list[float]] = {case: [] for case in cases}
    statuses: dict[str, set[int]] = {case: set() for case in cases}
    attempt = 0
    with httpx.Client(base_url=url, timeout=30) as client:
        for round_ in zip(*cases.values()):
            for case, (email, password) in zip(cases, round_):
                attempt += 1
                forwarded = {"X-Forwarded-For": f"10.{attempt // 65536 % 256}.{attempt // 256 % 256}.{attempt % 256}"}
                started = time.perf_counter()
                answer = client.post("/admin/login", json={"email": email, "password": password}, headers=forwarded)
                samples[case].append(time.perf_counter() - started)
                statuses[case].add(answer.status_code)
    return {case: summary(samples[case]) | {"statuses": sorted(statuses[case])} for case in cases}


def fresh_read(url: str, token: str) -> tuple[int, float]:
    """One read on a new connection (the kernel hands it to either worker): status, finished at."""
    with httpx.Client(timeout=30) as client:
        status = client.get(f"{url}/v1/stats", params=WINDOW, headers={"Authorization": f"Bearer {token}"}).status_code
    return status, time.monotonic()


def time_revocation(url: str, session: dict[str, str], project_id: str, watch_s: float) -> float:
    """Seconds from the revocation's answer to the last read the key still passed (an upper
    bound: that read's answer time), watching with 4 threads of fresh-connection reads."""
    with httpx.Client(base_url=url, headers=session, timeout=30) as client:
        key = client.post(f"/admin/projects/{project_id}/keys", json={"kind": "rk"}).json()
        with ThreadPoolExecutor(max_workers=8) as pool:
            if [s for s, _ in pool.map(lambda _: fresh_read(url, key["key"]), range(40))] != [200] * 40:
                raise SystemExit("the new key was not accepted everywhere")
        client.delete(f"/admin/keys/{key['prefix']}")
        revoked = time.monotonic()

    def watch(_: int) -> float:
        last_accepted = revoked
        while time.monotonic() - revoked < watch_s:
            status, at = fresh_read(url, key["key"])
            if status == 200:
                last_accepted = at
        return last_accepted

    with ThreadPoolExecutor(max_workers=4) as pool:
        return max(pool.map(watch, range(4))) - revoked


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--logins", type=int, default=10, help="per case (at most 10: the per-email limit)")
    parser.add_argument("--reads", type=int, default=100)
    parser.add_argument("--revocations", type=int, default=5)
    parser.add_argument("--watch", type=float, default=10.0, help="seconds of reads after each revocation")
    args = parser.parse_args()
    m = query.machine()
    print(f"machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM; Python {m['python']}")
    with tempfile.TemporaryDirectory(prefix="millimetric-bench-admin-") as tmp:
        data_dir = Path(tmp) / "data"
        for email in ("right@example.com", "wrong@example.com"):
            create_user(data_dir, email)
        server = Server(
            data_dir,
            Path(tmp) / "server.log",
            {"MILLIMETRIC_WORKERS": "2", "MILLIMETRIC_TRUSTED_PROXIES": "127.0.0.1/32"},
        )
        server.start()
        try:
            logins = time_logins(
                server.url,
                {
                    "right password": [("right@example.com", PASSWORD)] * args.logins,
                    "wrong password": [("wrong@example.com", "not the password")] * args.logins,
                    "unknown email": [(f"nobody{i}@example.com", "not the password") for i in range(args.logins)],
                },
            )
            token = httpx.post(
                f"{server.url}/admin/login",
                json={"email": "right@example.com", "password": PASSWORD},
                headers={"X-Forwarded-For": "10.255.0.1"},
                timeout=30,
            ).json()["access_token"]
            session = {"Authorization": f"Bearer {token}"}
            reads: dict[str, Any] = {}
            with httpx.Client(base_url=server.url, headers=session, timeout=30) as client:
                project_id = client.post("/admin/projects", json={"name": "bench"}).json()["project"]["id"]
                for path in ("/admin/me", "/admin/projects"):
                    samples = []
                    for _ in range(args.reads):
                        started = time.perf_counter()
                        client.get(path).raise_for_status()
                        samples.append(time.perf_counter() - started)
                    reads[path] = summary(samples)
            propagation = [
                time_revocation(server.url, session, project_id, args.watch) for _ in range(args.revocations)
            ]
        finally:
            server.stop()
    figures = {
        "machine": m,
        "logins": logins,
        "reads": reads,
        "revocation_seen_everywhere_s": [round(s, 2) for s in propagation],
    }
    for case, f in logins.items():
        print(f"POST /admin/login, {case}: p50 {f['p50_ms']} ms, max {f['max_ms']} ms (n={f['n']}, {f['statuses']})")
    for path, f in reads.items():
        print(f"GET {path}: p50 {f['p50_ms']} ms, p95 {f['p95_ms']} ms, max {f['max_ms']} ms (n={f['n']})")
    print(
        f"revocation: last read the key passed, after the revoke's answer ({args.watch:g} s watched): "
        + ", ".join(f"{s:.2f} s" for s in propagation)
    )
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"admin-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(figures, indent=2))
    print(f"figures: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
