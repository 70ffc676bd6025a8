"""The simulators are as strict as what they stand for, since the tests trust them: fault
knobs are checked (a wrong name, type or range is a 400 naming the knob, and nothing is
half-set), and each vendor's simulator refuses what the vendor facts say it refuses."""

from __future__ import annotations

import pytest

from sandbox.perfexcrm import PerfexSimulator


@pytest.fixture
def sim():
    return PerfexSimulator().create_app().test_client()


def test_good_knobs_are_set_and_read_back(sim):
    response = sim.post("/_sim/knobs", json={"fail_next": 2, "fail_status": 500, "fail_rate": 1})
    assert response.status_code == 200
    knobs = sim.get("/_sim/knobs").get_json()
    assert (knobs["fail_next"], knobs["fail_status"], knobs["fail_rate"]) == (2, 500, 1.0)


@pytest.mark.parametrize(
    ("body", "knob"),
    [
        ({"fail_next": "two"}, "fail_next"),
        ({"fail_next": 1.5}, "fail_next"),
        ({"fail_rate": 2}, "fail_rate"),
        ({"latency_ms": -1}, "latency_ms"),
        ({"fail_status": 42}, "fail_status"),
        ({"fail_retry_after": "yes"}, "fail_retry_after"),
        ({"no_such_knob": 1}, "no_such_knob"),
    ],
)
def test_a_bad_knob_is_a_400_naming_it_and_sets_nothing(sim, body, knob):
    response = sim.post("/_sim/knobs", json={"hang_next": 1, **body})
    assert response.status_code == 400
    assert knob in response.get_json()["fields"]
    assert sim.get("/_sim/knobs").get_json()["hang_next"] == 0


def test_echo_next_answers_the_request_back_in_the_vendor_error_then_stops(sim):
    from sandbox.perfexcrm import TOKEN

    sim.post("/_sim/knobs", json={"echo_next": 1, "fail_status": 401})
    headers = {"authtoken": TOKEN}
    echoed = sim.put("/api/customers/7?debug=1", data={"city": "Leeds"}, headers=headers)
    assert echoed.status_code == 401
    assert echoed.get_json()["status"] is False  # the vendor's own error shape
    message = echoed.get_json()["message"]
    assert TOKEN in message and "Leeds" in message and '"debug":"1"' in message
    assert sim.put("/api/customers/7", data={"city": "Leeds"}, headers=headers).status_code == 200
    assert sim.get("/_sim/knobs").get_json()["echo_next"] == 0


def test_an_injected_failure_says_retry_after_only_when_fail_retry_after_is_set(sim):
    sim.post("/_sim/knobs", json={"fail_next": 2, "fail_status": 503, "retry_after": "2"})
    assert "Retry-After" not in sim.get("/api/customers/7").headers
    sim.post("/_sim/knobs", json={"fail_retry_after": True})
    failed = sim.get("/api/customers/7")
    assert (failed.status_code, failed.headers.get("Retry-After")) == (503, "2")


@pytest.mark.parametrize("body", [b"[1, 2]", b"not json", b"7"])
def test_a_body_that_is_not_an_object_is_a_400(sim, body):
    response = sim.post("/_sim/knobs", data=body, content_type="application/json")
    assert response.status_code == 400


# -- the simulators are as strict as the vendor facts (tests trust them) --------------------
def test_halopsa_takes_only_a_bearer_token():
    from sandbox.halopsa import HaloSimulator

    halo = HaloSimulator()
    client = halo.create_app().test_client()
    form = {
        "grant_type": "client_credentials",
        "client_id": halo.client_id,
        "client_secret": halo.client_secret,
    }
    token = client.post("/auth/token", data=form).get_json()["access_token"]
    assert client.get("/api/Client/42", headers={"Authorization": token}).status_code == 401
    assert (
        client.get("/api/Client/42", headers={"Authorization": f"Basic {token}"}).status_code == 401
    )
    bearer = client.get("/api/Client/42", headers={"Authorization": f"Bearer {token}"})
    assert bearer.status_code == 200


def test_perfex_takes_form_fields_and_refuses_a_body_that_is_not_an_object():
    from sandbox.perfexcrm import TOKEN

    client = PerfexSimulator().create_app().test_client()
    auth = {"authtoken": TOKEN}
    assert client.put("/api/customers/7", data={"active": "true"}, headers=auth).status_code == 200
    assert client.get("/api/customers/7", headers=auth).get_json()["active"] == "1"
    assert client.put("/api/customers/7", json={"active": False}, headers=auth).status_code == 200
    assert client.get("/api/customers/7", headers=auth).get_json()["active"] == "0"
    listed = client.put("/api/customers/7", json=[{"city": "X"}], headers=auth)
    assert listed.status_code == 406


def test_every_knob_is_checked_and_every_checked_knob_exists():
    """The schema and the knobs it sets are declared apart: neither may miss one."""
    from dataclasses import fields

    from sandbox.base import Knobs, KnobsSchema

    assert set(KnobsSchema().fields) == {f.name for f in fields(Knobs)}
