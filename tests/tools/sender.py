"""A load client run as its own process: sends events with unique event_ids, records the outcome.

Each answered request appends `<status> <event_id,...>` to the outcome file and flushes, so the
file says which events got a 202 even when the server is killed mid-stream.

usage: sender.py URL TOKEN OUTFILE --requests N --concurrency C --batch B --tag T
"""

from __future__ import annotations

import argparse
import asyncio
import itertools

import httpx


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("token")
    parser.add_argument("outfile")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--batch", type=int, default=0, help="events per /v1/batch request; 0 = /v1/track")
    parser.add_argument("--tag", default="e")
    args = parser.parse_args()

    counter = itertools.count()
    headers = {"Authorization": f"Bearer {args.token}", "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    with open(args.outfile, "a", buffering=1) as out:
        async with httpx.AsyncClient(base_url=args.url, headers=headers, limits=limits, timeout=30) as client:

            async def worker() -> None:
                while (n := next(counter)) < args.requests:
                    ids = [f"{args.tag}-{n}-{i}" for i in range(max(args.batch, 1))]
                    if args.batch:
                        path, body = "/v1/batch", {"events": [{"event": "load", "event_id": i} for i in ids]}
                    else:
                        path, body = "/v1/track", {"event": "load", "event_id": ids[0]}
                    try:
                        response = await client.post(path, json=body)
                    except httpx.HTTPError:
                        out.write(f"error {','.join(ids)}\n")
                        return  # the server is gone
                    retry = response.headers.get("retry-after", "-")
                    out.write(f"{response.status_code} {','.join(ids)} {retry}\n")

            await asyncio.gather(*(worker() for _ in range(args.concurrency)))


if __name__ == "__main__":
    asyncio.run(main())
