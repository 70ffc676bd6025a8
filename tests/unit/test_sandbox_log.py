"""The simulators' request log keeps the latest requests only: a sandbox left running
under traffic (``make up``) must not grow without bound."""

from __future__ import annotations

from sandbox.perfexcrm import PerfexSimulator


class SmallLog(PerfexSimulator):
    log_limit = 3


def test_the_request_log_keeps_the_latest_requests_up_to_its_limit() -> None:
    client = SmallLog().create_app().test_client()
    for n in range(5):
        client.put(f"/api/customers/{n}", data={"company": f"c{n}"})
    log = client.get("/_sim/log").get_json()
    assert [entry["path"] for entry in log] == [f"/api/customers/{n}" for n in (2, 3, 4)]
    assert log[-1]["body"] == {"company": "c4"}


def test_reset_empties_the_request_log() -> None:
    client = SmallLog().create_app().test_client()
    client.put("/api/customers/1", data={"company": "c"})
    client.post("/_sim/reset")
    assert client.get("/_sim/log").get_json() == []
