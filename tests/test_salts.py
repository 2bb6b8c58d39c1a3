"""Daily salts and the visitor hash, with an injected clock."""

import datetime as dt

import pytest

from millimetric.ingest.visit import VisitFactory
from millimetric.ingest.visitor_hash import visitor_hash
from millimetric.store.control import ControlPlane


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def control(tmp_path):
    plane = ControlPlane(f"sqlite:///{tmp_path / 'c.sqlite3'}", "pepper")
    plane.migrate()
    return plane


def ip_hash(factory, project, ip="198.51.100.7", ua="Mozilla/5.0"):
    visit = factory.visit(project, ip, ua, "shop.example.com")
    return visitor_hash(visit.salt, visit.ip, visit.user_agent, visit.project_id)


def test_same_visitor_same_day_same_hash_next_day_different(control):
    project, _ = control.create_project("p")
    clock = Clock(dt.datetime(2026, 5, 1, 0, 5, tzinfo=dt.timezone.utc))
    factory = VisitFactory(control, clock)
    morning = ip_hash(factory, project)
    clock.now = dt.datetime(2026, 5, 1, 23, 59, tzinfo=dt.timezone.utc)
    assert ip_hash(factory, project) == morning
    assert len(morning) == 32 and int(morning, 16) >= 0
    assert ip_hash(factory, project, ip="198.51.100.8") != morning
    assert ip_hash(factory, project, ua="Other/1.0") != morning
    other_project, _ = control.create_project("q")
    assert ip_hash(factory, other_project) != morning
    clock.now = dt.datetime(2026, 5, 2, 0, 0, tzinfo=dt.timezone.utc)
    assert ip_hash(factory, project) != morning


def test_processes_share_the_days_salt(control):
    project, _ = control.create_project("p")
    clock = Clock(dt.datetime(2026, 5, 1, 12, tzinfo=dt.timezone.utc))
    assert ip_hash(VisitFactory(control, clock), project) == ip_hash(VisitFactory(control, clock), project)


def test_salts_older_than_48_hours_are_deleted(control):
    project, _ = control.create_project("p")
    clock = Clock(dt.datetime(2026, 5, 1, 12, tzinfo=dt.timezone.utc))
    factory = VisitFactory(control, clock)
    for day in range(1, 5):
        clock.now = dt.datetime(2026, 5, day, 12, tzinfo=dt.timezone.utc)
        ip_hash(factory, project)
    assert control.salt_days() == [dt.date(2026, 5, 3), dt.date(2026, 5, 4)]
