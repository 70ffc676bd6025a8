"""The simulators' request log keeps the latest requests only: a sandbox left running
under traffic (``make up``) must not grow without bound. It is served without auth, so
the credentials in a logged body are blanked."""

from __future__ import annotations

import json

import pytest

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


# -- credentials: /_sim/log is served without auth -------------------------------------
def test_the_log_blanks_halopsa_client_secret_and_the_login_still_works() -> None:
    from sandbox.halopsa import CLIENT_ID, CLIENT_SECRET, HaloSimulator

    client = HaloSimulator().create_app().test_client()
    form = {"grant_type": "client_credentials", "client_id": CLIENT_ID}
    answer = client.post("/auth/token?tenant=acme", data={**form, "client_secret": CLIENT_SECRET})
    assert answer.status_code == 200  # the simulator itself saw the secret
    (entry,) = client.get("/_sim/log").get_json()
    assert entry["body"] == {**form, "client_secret": ""}
    assert entry["query"] == {"tenant": "acme"}
    assert CLIENT_SECRET not in client.get("/_sim/log").get_data(as_text=True)


@pytest.mark.parametrize("secret", ["token", "password"])
def test_the_log_blanks_portabilling_credentials_inside_its_json_form_fields(secret: str) -> None:
    from sandbox.portabilling import LOGIN, PASSWORD, TOKEN, PortaSimulator

    value = {"token": TOKEN, "password": PASSWORD}[secret]
    client = PortaSimulator().create_app().test_client()
    credentials = json.dumps({"login": LOGIN, secret: value})
    login = client.post("/rest/Session/login", data={"params": credentials})
    assert login.status_code == 200 and login.get_json()["session_id"]
    info = {"auth_info": credentials, "params": json.dumps({"i_customer": 1001})}
    assert client.post("/rest/Customer/get_customer_info", data=info).status_code == 200
    logged = client.get("/_sim/log").get_json()
    assert json.loads(logged[0]["body"]["params"]) == {"login": LOGIN, secret: ""}
    assert json.loads(logged[1]["body"]["auth_info"]) == {"login": LOGIN, secret: ""}
    assert logged[1]["body"]["params"] == info["params"]  # nothing to blank: kept as sent
    assert value not in client.get("/_sim/log").get_data(as_text=True)


def test_the_log_blanks_credentials_in_a_json_body() -> None:
    from sandbox.portabilling import LOGIN, TOKEN, PortaSimulator

    client = PortaSimulator().create_app().test_client()
    document = {"auth_info": {"login": LOGIN, "token": TOKEN}, "params": {"i_customer": 1001}}
    assert client.post("/rest/Customer/get_customer_info", json=document).status_code == 200
    (entry,) = client.get("/_sim/log").get_json()
    assert entry["body"] == {**document, "auth_info": {"login": LOGIN, "token": ""}}
