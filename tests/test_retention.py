"""Retention: expired events are refused at ingest and deleted by the sweep."""

import datetime as dt

from millimetric.privacy.retention import enforce_retention
from millimetric.store.control import ControlPlane, ProjectChanges

from conftest import bearer, cli, cli_project, stored_events


def iso(days_ago: float) -> str:
    return (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=days_ago)).isoformat()


def test_sweep_deletes_only_expired_events_of_projects_with_retention(client, keys):
    from conftest import create_project

    other = create_project(client, "forever")
    events = [{"event": "old", "timestamp": iso(40)}, {"event": "new", "timestamp": iso(5)}]
    for token in (keys.sk, other.sk):
        assert client.post("/v1/batch", json={"events": events}, headers=bearer(token)).status_code == 202
    services = client.app.state.services
    services.control.update_project(keys.project_id, ProjectChanges(retention_days=30))
    deleted = enforce_retention(services.control, services.events)
    assert deleted == {keys.slug: 1}
    assert [r["event_name"] for r in stored_events(client, "project_id = ?", (keys.project_id,))] == ["new"]
    assert len(stored_events(client, "project_id = ?", (other.project_id,))) == 2
    services.keys.invalidate()
    r = client.post("/v1/track", json={"event": "late", "timestamp": iso(31)}, headers=bearer(keys.sk))
    assert r.status_code == 400 and "timestamp" in r.json()["details"]["fieldErrors"]


def test_retention_command(tmp_path):
    cli_project(tmp_path, "Shop")
    cli("projects", "retention", "shop", "90", data_dir=tmp_path)
    control = ControlPlane(f"sqlite:///{tmp_path / 'control.sqlite3'}", "x")
    assert control.get_project("shop").retention_days == 90
    cli("projects", "retention", "shop", "off", data_dir=tmp_path)
    assert control.get_project("shop").retention_days is None
