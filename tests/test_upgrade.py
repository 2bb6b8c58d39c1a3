"""Durable formats are versioned: a data directory of an older release (its journal included) is
opened and replayed by this one; one of a newer release is refused with a clear message."""

import json
import shutil
from pathlib import Path

import duckdb
import pytest
from starlette.testclient import TestClient

from millimetric.api.app import create_app
from millimetric.store.duckdb import migrations
from millimetric.store.duckdb.database import EventDatabase
from millimetric.store.duckdb.migrations import StoreFormatError

from conftest import bearer, make_settings

FIXTURE = Path(__file__).parent / "fixtures" / "datadir-v1"


def test_a_data_directory_of_the_first_release_opens_and_replays_its_journal(tmp_path):
    data_dir = tmp_path / "data"
    shutil.copytree(FIXTURE / "data", data_dir)
    keys = json.loads((FIXTURE / "keys.json").read_text())["keys"]
    assert list((data_dir / "events.journal").glob("*.log")), "the fixture holds an unflushed journal"
    settings = make_settings(data_dir, pepper="fixture-pepper")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        params = {"from": "2026-01-01", "to": "2027-01-01", "group_by": "event_name"}
        answer = client.get("/v1/stats", params=params, headers=bearer(keys["rk"]))
        assert answer.status_code == 200, answer.text
        assert answer.json()["rows"] == [
            {"event_name": "$pageview", "value": 40},
            {"event_name": "signup", "value": 25},
            {"event_name": "$identify", "value": 1},
            {"event_name": "purchase", "value": 1},
        ]
        user = client.get("/v1/query", params={**params, "user_id": "u2"}, headers=bearer(keys["rk"])).json()
        assert len(user["rows"]) == 5
        # new events go on after the replayed seqs
        track = client.post("/v1/track", json={"event": "after-upgrade"}, headers=bearer(keys["sk"]))
        assert track.status_code == 202
        status = client.app.state.services.events.status()
        assert status["format"] == migrations.VERSION
    assert not list((data_dir / "events.journal").glob("*.log"))
    with duckdb.connect(str(data_dir / "events.duckdb"), read_only=True) as con:
        assert con.execute("SELECT version FROM store_format").fetchall() == [(migrations.VERSION,)]
        assert con.execute("SELECT count(*), count(DISTINCT seq), max(seq) FROM events").fetchall() == [(68, 68, 68)]


def test_an_event_store_of_a_newer_release_is_refused(tmp_path):
    path = tmp_path / "events.duckdb"
    EventDatabase(path).close()
    with duckdb.connect(str(path)) as con:
        con.execute("UPDATE store_format SET version = version + 1")
    with pytest.raises(StoreFormatError, match="newer millimetric"):
        EventDatabase(path)
    with duckdb.connect(str(path), read_only=True) as con:  # refused, not touched
        assert con.execute("SELECT version FROM store_format").fetchall() == [(migrations.VERSION + 1,)]


def test_the_server_refuses_to_start_on_a_newer_event_store(tmp_path):
    data_dir = tmp_path / "data"
    EventDatabase(make_settings(data_dir).event_store_path).close()
    with duckdb.connect(str(data_dir / "events.duckdb")) as con:
        con.execute("UPDATE store_format SET version = 99")
    with pytest.raises(Exception, match="newer millimetric"):
        with TestClient(create_app(make_settings(data_dir))):
            pass
