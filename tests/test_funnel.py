"""GET /v1/funnel end to end: designed cases (out-of-order steps, the window, repeated steps, ties,
identity stitching, filters, the range) with hand-checked counts, every answer also equal to the
plain-Python reference (`store_reference.ReferenceStore.funnel`) over the rows the store holds;
the shape of the answer; every parameter error and the key scopes."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Iterator

import pytest
from starlette.testclient import TestClient

from millimetric.api.app import create_app
from millimetric.events.model import EventRow
from millimetric.events.queries import Filters, FunnelPlan, TimeRange
from millimetric.query.funnel import answer, funnel_plan

from conftest import bearer, create_project, make_settings, stored_events
from store_reference import ReferenceStore

T0 = dt.datetime(2024, 1, 10)
RANGE = {"from": "2024-01-10T00:00:00Z", "to": "2024-01-13T00:00:00Z"}
BUY = "signup,activate,purchase"
DAY = 86_400


def at(seconds: float) -> str:
    return (T0 + dt.timedelta(seconds=seconds)).isoformat(timespec="milliseconds") + "Z"


def visit(anon: str, *steps: tuple[str, float], **extra: Any) -> list[dict[str, Any]]:
    return [{"event": name, "anonymous_id": anon, "timestamp": at(seconds), **extra} for name, seconds in steps]


# Each visitor is one designed case; each `batch` is stored in order (seq follows the list).
DESIGNED = [
    visit("full", ("signup", 0), ("activate", 60), ("purchase", 120)),
    # out of order: a step before the previous one does not count
    visit("backwards", ("purchase", 0), ("activate", 60), ("signup", 120)),
    visit("skips", ("signup", 0), ("purchase", 60), ("activate", 120)),
    # the window runs from the first step and includes its end
    visit("late", ("signup", 0), ("activate", 3600), ("purchase", DAY + 1)),
    visit("just-in-time", ("signup", 0), ("activate", 10), ("purchase", DAY)),
    # the first try times out; a later start converts
    visit(
        "retry",
        ("signup", 0),
        ("activate", DAY + 10),
        ("signup", DAY + 100),
        ("activate", DAY + 200),
        ("purchase", DAY + 300),
    ),
    # the same instant: stored later follows, stored earlier does not
    visit("tie", ("signup", 500), ("activate", 500)),
    visit("tie-reversed", ("activate", 500), ("signup", 500)),
    # repeated steps need distinct events
    visit("two-views", ("$pageview", 0), ("$pageview", 10), ("signup", 20)),
    visit("one-view", ("$pageview", 0), ("signup", 20)),
    visit("two-views-at-once", ("$pageview", 30), ("$pageview", 30), ("signup", 40)),
    # the range: a first step before `from` is not seen
    visit("early", ("signup", -60), ("activate", 60)),
    # filters: the signup comes from a newsletter, the activation from nowhere, in the US
    visit("newsletter", ("signup", 0), url="https://shop.example.com/?utm_source=newsletter&utm_medium=email")
    + visit("newsletter", ("activate", 30), context={"ip": "8.8.8.8"}),
    # stitching: "pre" browses and signs up anonymously, is identified as alice later (outside the
    # range), and alice buys on another device; "shared" was identified as both bob and carol;
    # dave is only ever known by the user_id on his events.
    visit("pre", ("$pageview", 0), ("signup", 60)),
    visit("phone", ("purchase", 300), user_id="alice"),
    visit("shared", ("$pageview", 0), ("signup", 10)),
    visit("dave-laptop", ("$pageview", 0), user_id="dave") + visit("dave-phone", ("signup", 5), user_id="dave"),
    visit("stranger", ("$pageview", 0), ("signup", 10), ("purchase", 20)),
]
IDENTIFIES = [("pre", "alice"), ("shared", "bob"), ("shared", "carol")]
# signup,activate,purchase over RANGE, one day: 16 visitors sign up in the range ("early" did before
# it); full, skips, late, just-in-time, retry, tie and newsletter activate; full, just-in-time and
# retry buy.
SIGNED_UP, ACTIVATED, PURCHASED = 16, 7, 3


class Loaded:
    def __init__(self, client: TestClient, rk: str, sk: str, reference: ReferenceStore, project_id: str) -> None:
        self.client, self.rk, self.sk, self.reference, self.project_id = client, rk, sk, reference, project_id

    def get(self, token: str | None = None, **params: str) -> Any:
        return self.client.get("/v1/funnel", params=params, headers=bearer(token or self.rk))

    def counts(self, steps: str, **params: str) -> list[int]:
        """The counts the server answers, after checking them against the reference."""
        query = {**RANGE, "steps": steps, **params}
        r = self.get(**query)
        assert r.status_code == 200, r.text
        body = r.json()
        got = [step["count"] for step in body["steps"]]
        want = self.reference.funnel(self.project_id, funnel_plan(query, None))
        assert got == want, f"{query}: the server says {got}, the reference {want}"
        assert body["by"] == params.get("by", "anonymous")
        assert [step["event"] for step in body["steps"]] == [s.strip() for s in steps.split(",")]
        return got


def _reference(client: TestClient) -> ReferenceStore:
    """The reference over exactly the rows the store holds, in their stored order."""
    ref = ReferenceStore()
    fields = set(EventRow.__struct_fields__)
    ref.append(EventRow(**{k: v for k, v in row.items() if k in fields}) for row in stored_events(client))
    return ref


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    data_dir: Path = tmp_path_factory.mktemp("funnel") / "data"
    with TestClient(create_app(make_settings(data_dir)), raise_server_exceptions=False) as client:
        keys = create_project(client)
        other = create_project(client, "other")
        for batch in DESIGNED:
            r = client.post("/v1/batch", json={"events": batch}, headers=bearer(keys.sk))
            assert r.status_code == 202, r.text
        for anon, user in IDENTIFIES:
            r = client.post("/v1/identify", json={"anonymous_id": anon, "user_id": user}, headers=bearer(keys.sk))
            assert r.status_code == 200, r.text
        # Another project's events and identifies never count here.
        client.post(
            "/v1/batch", json={"events": visit("full", ("signup", 1), ("activate", 2))}, headers=bearer(other.sk)
        )
        client.post("/v1/identify", json={"anonymous_id": "stranger", "user_id": "alice"}, headers=bearer(other.sk))
        yield Loaded(client, keys.rk, keys.sk, _reference(client), keys.project_id)


# Designed cases ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("visitor", "params", "expected"),
    [
        ("full", {}, [1, 1, 1]),
        ("backwards", {}, [1, 0, 0]),
        ("skips", {}, [1, 1, 0]),
        ("late", {}, [1, 1, 0]),
        ("late", {"window": str(DAY + 1)}, [1, 1, 1]),
        ("late", {"window": "3599"}, [1, 0, 0]),
        ("just-in-time", {}, [1, 1, 1]),
        ("just-in-time", {"window": str(DAY - 1)}, [1, 1, 0]),
        ("retry", {}, [1, 1, 1]),
        ("tie", {}, [1, 1, 0]),
        ("tie-reversed", {}, [1, 0, 0]),
        ("early", {}, [0, 0, 0]),
        ("early", {"from": at(-3600)}, [1, 1, 0]),
        ("early", {"from": at(-3600), "to": at(60)}, [1, 0, 0]),  # `to` is exclusive
    ],
)
def test_designed_visitors(loaded: Loaded, visitor: str, params: dict[str, str], expected: list[int]) -> None:
    assert loaded.counts(BUY, anonymous_id=visitor, **params) == expected


def test_repeated_steps_need_distinct_events(loaded: Loaded) -> None:
    steps = "$pageview,$pageview,signup"
    assert loaded.counts(steps, anonymous_id="two-views") == [1, 1, 1]
    assert loaded.counts(steps, anonymous_id="one-view") == [1, 0, 0]
    assert loaded.counts(steps, anonymous_id="two-views-at-once") == [1, 1, 1]
    assert loaded.counts("signup,signup", anonymous_id="retry") == [1, 0]  # the second is a day and 100 s later
    assert loaded.counts("signup,signup", anonymous_id="retry", window=str(DAY + 100)) == [1, 1]
    # a step may come back later in the funnel
    assert loaded.counts("signup,activate,signup,activate", anonymous_id="retry", window=str(2 * DAY)) == [1, 1, 1, 1]


def test_by_user_stitches_identities_as_the_user_id_filter_does(loaded: Loaded) -> None:
    steps = "$pageview,signup,purchase"
    # alice: the anonymous visit and the purchase on her phone are one journey
    assert loaded.counts(steps, by="user", user_id="alice") == [1, 1, 1]
    assert loaded.counts(steps, anonymous_id="pre") == [1, 1, 0]
    assert loaded.counts(steps, anonymous_id="phone") == [0, 0, 0]
    # a visitor linked to two users counts for both (each of their user_id filters finds the visit)
    assert loaded.counts(steps, by="user", user_id="bob") == [2, 2, 0]
    assert loaded.counts(steps, by="user", anonymous_id="shared") == [2, 2, 0]
    # a user_id on the events is enough; devices join up
    assert loaded.counts(steps, by="user", user_id="dave") == [1, 1, 0]
    assert loaded.counts(steps, anonymous_id="dave-laptop") == [1, 0, 0]
    # never identified: not a user
    assert loaded.counts(steps, by="user", anonymous_id="stranger") == [0, 0, 0]
    assert loaded.counts(steps, anonymous_id="stranger") == [1, 1, 1]
    # everyone: alice, bob, carol, dave; and every visitor with a page view
    assert loaded.counts(steps, by="user") == [4, 4, 1]
    assert loaded.counts(steps) == [7, 6, 1]


def test_filters_select_the_events_first(loaded: Loaded) -> None:
    assert loaded.counts("signup,activate", anonymous_id="newsletter") == [1, 1]
    assert loaded.counts("signup,activate", source="newsletter") == [1, 0]
    assert loaded.counts("signup,activate", medium="email") == [1, 0]
    assert loaded.counts("signup,activate", country="US") == [0, 0]
    assert loaded.counts("activate,activate", country="US") == [1, 0]
    assert loaded.counts("signup,activate", event="signup") == [SIGNED_UP, 0]


def test_whole_project_against_the_reference(loaded: Loaded) -> None:
    """Every visitor at once, several step lists, windows, both actors and filters."""
    answers = []
    for steps in (BUY, "$pageview,signup", "$pageview,$pageview,signup", "signup,activate,signup,activate,purchase"):
        for window in ("1", "60", "86400", "172800"):
            for by in ("anonymous", "user"):
                answers.append(loaded.counts(steps, window=window, by=by))
                answers.append(loaded.counts(steps, window=window, by=by, **{"from": at(-3600)}))
    assert loaded.counts(BUY) == [SIGNED_UP, ACTIVATED, PURCHASED]
    assert any(a[0] > a[1] > 0 for a in answers) and any(a[0] == a[-1] for a in answers)


def test_the_answer_shape(loaded: Loaded) -> None:
    r = loaded.get(**RANGE, steps=f" {BUY.replace(',', ' , ')} ", window="86400")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert r.json() == {
        "by": "anonymous",
        "steps": [
            {"event": "signup", "count": 16, "conversion": 1.0, "drop_off": 0.0},
            {"event": "activate", "count": 7, "conversion": 7 / 16, "drop_off": 1 - 7 / 16},
            {"event": "purchase", "count": 3, "conversion": 3 / 16, "drop_off": 1 - 3 / 7},
        ],
    }
    empty = loaded.get(**RANGE, steps="nothing,signup").json()["steps"]
    assert empty == [
        {"event": "nothing", "count": 0, "conversion": 0.0, "drop_off": 0.0},
        {"event": "signup", "count": 0, "conversion": 0.0, "drop_off": 0.0},
    ]


def test_conversion_and_drop_off_rules() -> None:
    plan = FunnelPlan(TimeRange(T0, T0 + dt.timedelta(days=1)), Filters(), ("a", "b", "c", "d"), DAY, "user")
    assert answer(plan, [4, 2, 0, 0])["steps"] == [
        {"event": "a", "count": 4, "conversion": 1.0, "drop_off": 0.0},
        {"event": "b", "count": 2, "conversion": 0.5, "drop_off": 0.5},
        {"event": "c", "count": 0, "conversion": 0.0, "drop_off": 1.0},
        {"event": "d", "count": 0, "conversion": 0.0, "drop_off": 0.0},
    ]
    assert answer(plan, [4, 2, 0, 0])["by"] == "user"


# Errors --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({}, "steps"),
        ({"steps": ""}, "steps"),
        ({"steps": "signup"}, "steps"),
        ({"steps": ",".join(["x"] * 11)}, "steps"),
        ({"steps": "signup,,purchase"}, "steps"),
        ({"steps": "signup, ,purchase"}, "steps"),
        ({"steps": "signup,"}, "steps"),
        ({"steps": "signup," + "x" * 2049}, "steps"),
        ({"steps": BUY, "window": "0"}, "window"),
        ({"steps": BUY, "window": "-5"}, "window"),
        ({"steps": BUY, "window": "1.5"}, "window"),
        ({"steps": BUY, "window": "1e3"}, "window"),
        ({"steps": BUY, "window": "day"}, "window"),
        ({"steps": BUY, "window": "31622401"}, "window"),
        ({"steps": BUY, "window": "٣"}, "window"),  # a non-ASCII digit
        ({"steps": BUY, "by": "session"}, "by"),
        ({"steps": BUY, "by": ""}, "by"),
        ({"steps": BUY, "from": None}, "from"),
        ({"steps": BUY, "to": "2024-01-09T00:00:00Z"}, "to"),
        ({"steps": BUY, "country": ""}, "country"),
    ],
)
def test_bad_parameters_are_400_invalid_params(loaded: Loaded, params: dict[str, str | None], param: str) -> None:
    query = {k: v for k, v in {**RANGE, **params}.items() if v is not None}
    r = loaded.get(**query)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"] == "invalid_params" and body["details"]["param"] == param, body
    assert body["details"]["reason"]
    if param == "by":
        assert body["details"]["allowed"] == ["anonymous", "user"]


def test_limits_that_pass(loaded: Loaded) -> None:
    assert len(loaded.counts(",".join(["signup", "activate"] * 5))) == 10
    assert loaded.counts(BUY, window="31622400") == loaded.counts(BUY, window="172800")
    assert loaded.counts(BUY, window="1") == [SIGNED_UP, 1, 0]  # only the tie: the same instant is within any window


def test_scopes_and_account_keys(loaded: Loaded) -> None:
    client = loaded.client
    control = client.app.state.services.control
    project = control.get_project(loaded.project_id)
    query = {**RANGE, "steps": BUY}
    assert loaded.get(loaded.sk, **query).status_code == 200
    pk = control.create_key(project, "pk")
    r = client.get("/v1/funnel", params=query, headers=bearer(pk, Origin="https://shop.example.com"))
    assert (r.status_code, r.json()) == (403, {"error": "insufficient_scope"})
    assert client.get("/v1/funnel", params=query).json() == {"error": "missing_bearer_token"}
    ak = control.create_key(project, "ak")
    r = loaded.get(ak, **query)
    assert (r.status_code, r.json()["details"]["param"]) == (400, "project_id")
    by_ak = loaded.get(ak, **query, project_id=loaded.project_id)
    assert by_ak.status_code == 200 and by_ak.json() == loaded.get(**query).json()
    assert loaded.get(**query, project_id="other").json() == {"error": "not_found"}
