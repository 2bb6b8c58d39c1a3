"""Paging through 2,500 events with limit 1000 against a real server while another task keeps
inserting new events into the same range: every original event is seen exactly once."""

import datetime as dt
import random
import threading

import httpx

from conftest import bearer, cli_project

START = dt.datetime(2024, 6, 1)
RANGE = {"from": "2024-06-01T00:00:00Z", "to": "2024-06-02T00:00:00Z"}


def batch(n: int, prefix: str, rng: random.Random) -> dict:
    return {
        "events": [
            {
                "event": "x",
                "event_id": f"{prefix}{i}",
                # whole seconds, so many events share a timestamp and pages split ties
                "timestamp": (START + dt.timedelta(seconds=rng.randrange(3600))).isoformat() + "Z",
            }
            for i in range(n)
        ]
    }


def test_cursor_pages_stably_while_new_events_arrive(server_factory, tmp_path):
    keys = cli_project(tmp_path / "data")
    server = server_factory(tmp_path / "data")
    rng = random.Random(1)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for start in range(0, 2500, 1000):
            r = client.post(
                "/v1/batch", json=batch(min(1000, 2500 - start), f"orig-{start}-", rng), headers=bearer(keys.sk)
            )
            assert r.status_code == 202, r.text

        stop, inserted = threading.Event(), []

        def insert_until_stopped() -> None:
            writer_rng = random.Random(2)
            with httpx.Client(base_url=server.url, timeout=30) as writer:
                while not stop.is_set():
                    r = writer.post(
                        "/v1/batch", json=batch(50, f"new-{len(inserted)}-", writer_rng), headers=bearer(keys.sk)
                    )
                    assert r.status_code == 202
                    inserted.append(50)

        thread = threading.Thread(target=insert_until_stopped)
        thread.start()
        try:
            seen: list[str] = []
            cursor = None
            pages = 0
            while True:
                before = len(inserted)
                params = {**RANGE, "limit": "1000", **({"cursor": cursor} if cursor else {})}
                body = client.get("/v1/query", params=params, headers=bearer(keys.rk)).json()
                seen += [row["event_id"] for row in body["rows"]]
                pages += 1
                cursor = body["next_cursor"]
                if cursor is None:
                    break
                while len(inserted) < before + 2:  # make sure new events land between every two pages
                    threading.Event().wait(0.01)
        finally:
            stop.set()
            thread.join()
    assert pages == 3
    assert sum(inserted) >= 200
    originals = [e for e in seen if e.startswith("orig-")]
    assert len(originals) == len(set(originals)) == 2500
    assert len(seen) == 2500  # nothing that arrived after the first page shows up
