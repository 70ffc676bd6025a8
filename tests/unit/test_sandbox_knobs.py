"""The simulators' fault knobs are checked: a wrong name, type or range is a 400 naming
the knob, and a bad request changes no knob (the simulators are test tools, but a test
that mistypes a knob must hear about it, not get a 500 or a half-set fault)."""

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
        ({"no_such_knob": 1}, "no_such_knob"),
    ],
)
def test_a_bad_knob_is_a_400_naming_it_and_sets_nothing(sim, body, knob):
    response = sim.post("/_sim/knobs", json={"hang_next": 1, **body})
    assert response.status_code == 400
    assert knob in response.get_json()["fields"]
    assert sim.get("/_sim/knobs").get_json()["hang_next"] == 0


@pytest.mark.parametrize("body", [b"[1, 2]", b"not json", b"7"])
def test_a_body_that_is_not_an_object_is_a_400(sim, body):
    response = sim.post("/_sim/knobs", data=body, content_type="application/json")
    assert response.status_code == 400
