"""PortaBilling connector against its simulator over real HTTP (no Celery involved here)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from worker.vendors import errors
from worker.vendors.base import VendorInstance
from worker.vendors.portabilling import PortaBilling

KIND = "portabilling"
LOGIN, TOKEN, PASSWORD = "porta-api", "porta-demo-token", "porta-demo-password"


def make(sandbox: Any, content_type: str = "form", timeout: float = 2, **auth: str) -> PortaBilling:
    instance = VendorInstance(
        name="porta",
        kind=KIND,
        base_url=sandbox.base(KIND),
        auth=auth or {"login": LOGIN, "token": TOKEN},
        options={"content_type": content_type},
        timeout=timeout,
    )
    return PortaBilling(instance)


@pytest.fixture(params=["form", "json"])
def porta(request: pytest.FixtureRequest, sandbox: Any) -> Iterator[PortaBilling]:
    connector = make(sandbox, request.param)
    yield connector
    connector.close()


def calls(sandbox: Any, method: str) -> list[dict]:
    return [e for e in sandbox.log(KIND) if e["path"].endswith(f"/{method}")]


def documents(entry: dict) -> dict:
    """auth_info/params of a logged request, whichever content type carried them."""
    body = entry["body"]
    return {k: json.loads(v) if isinstance(v, str) else v for k, v in body.items()}


# -- happy paths --------------------------------------------------------------------
def test_update_customer_changes_the_record(porta, sandbox):
    result = porta.apply("update_customer", "1001", {"bill_status": "O", "credit_limit": 49.0})
    assert result == {"i_customer": 1001}
    record = sandbox.record(KIND, "customer:1001")
    assert (record["bill_status"], record["credit_limit"], record["city"]) == ("O", 49.0, "London")


def test_update_account_changes_the_record(porta, sandbox):
    result = porta.apply("update_account", 2001, {"blocked": "Y", "email": "ops@acme.example"})
    assert result == {"i_account": 2001}
    record = sandbox.record(KIND, "account:2001")
    assert (record["blocked"], record["email"], record["i_customer"]) == (
        "Y",
        "ops@acme.example",
        1001,
    )


def test_updates_read_back_through_the_vendor_api(porta):
    porta.apply("update_customer", 1002, {"bill_status": "S"})
    porta.apply("update_account", 2003, {"bill_status": "C"})
    customer = porta.call("Customer", "get_customer_info", {"i_customer": 1002})
    account = porta.call("Account", "get_account_info", {"i_account": 2003})
    assert customer["customer_info"]["bill_status"] == "S"
    assert account["account_info"]["bill_status"] == "C"


def test_form_content_type_sends_json_strings_in_form_fields(sandbox):
    make(sandbox, "form").apply("update_customer", 1001, {"bill_status": "O"})
    entry = calls(sandbox, "update_customer")[0]
    assert set(entry["body"]) == {"auth_info", "params"}
    assert json.loads(entry["body"]["params"]) == {
        "customer_info": {"i_customer": 1001, "bill_status": "O"}
    }


def test_json_content_type_sends_one_json_document(sandbox):
    make(sandbox, "json").apply("update_customer", 1001, {"bill_status": "O"})
    body = calls(sandbox, "update_customer")[0]["body"]
    assert body["params"] == {"customer_info": {"i_customer": 1001, "bill_status": "O"}}
    assert set(body["auth_info"]) == {"session_id"}


def test_values_travel_in_wire_form(porta, sandbox):
    porta.apply(
        "update_customer",
        1001,
        {
            "credit_exceed": True,
            "country": "de",
            "credit_limit_until": "2025-06-01T12:00:00+02:00",
        },
    )
    record = sandbox.record(KIND, "customer:1001")
    assert record["credit_exceed"] == 1
    assert record["country"] == "DE"
    assert record["credit_limit_until"] == "2025-06-01 10:00:00"


def test_password_login_works(sandbox):
    make(sandbox, login=LOGIN, password=PASSWORD).apply("update_customer", 1001, {"note": "hi"})
    assert sandbox.record(KIND, "customer:1001")["note"] == "hi"


# -- session handling ----------------------------------------------------------------
def test_session_is_obtained_once_and_reused(porta, sandbox):
    for limit in (1, 2, 3):
        porta.apply("update_customer", 1001, {"credit_limit": limit})
    porta.apply("update_account", 2001, {"blocked": "N"})
    assert len(calls(sandbox, "login")) == 1
    used = {
        documents(e)["auth_info"]["session_id"]
        for e in sandbox.log(KIND)
        if not e["path"].endswith("/login")
    }
    assert len(used) == 1


def test_concurrent_calls_share_one_login(sandbox):
    connector = make(sandbox)
    threads = [
        threading.Thread(
            target=connector.apply, args=("update_customer", 1001, {"credit_limit": n})
        )
        for n in range(5)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls(sandbox, "login")) == 1
    assert len(calls(sandbox, "update_customer")) == 5


# C: an expired session answers a 500 fault; I: its code -- the vendor file's example,
# and one naming no "auth" (any unknown 500 fault may be a dead session)
@pytest.mark.parametrize("fault", [None, "Server.Session.gone"])
def test_expired_session_is_recovered_with_one_new_login(porta, sandbox, fault):
    if fault:
        sandbox.http.post(f"/{KIND}/_sim/session-fault", json={"faultcode": fault})
    porta.apply("update_customer", 1001, {"bill_status": "O"})
    sandbox.expire(KIND)
    porta.apply("update_customer", 1001, {"bill_status": "C"})
    assert sandbox.record(KIND, "customer:1001")["bill_status"] == "C"
    assert len(calls(sandbox, "login")) == 2
    assert len(calls(sandbox, "update_customer")) == 3  # refused once, then retried


def test_wrong_credentials_are_auth_failed_after_one_login(sandbox):
    with pytest.raises(errors.AuthFailed):
        make(sandbox, login=LOGIN, token="wrong-token").apply(
            "update_customer", 1001, {"note": "x"}
        )
    assert len(calls(sandbox, "login")) == 1
    assert calls(sandbox, "update_customer") == []


# -- faults ----------------------------------------------------------------------------
def test_unknown_customer_is_not_found(porta):
    with pytest.raises(errors.NotFound):
        porta.apply("update_customer", 999999, {"bill_status": "O"})


def test_unknown_account_is_not_found(porta):
    with pytest.raises(errors.NotFound):
        porta.apply("update_account", 999999, {"blocked": "Y"})


@pytest.mark.parametrize("fields", [{"bill_status": "X"}, {"credit_limit": "abc"}])
def test_vendor_validation_fault_is_rejected(porta, sandbox, fields):
    # the schema would refuse these before any call; go round it to reach the vendor's check
    with pytest.raises(errors.Rejected) as caught:
        porta.op_update_customer(1001, fields)
    assert caught.value.status == 500
    assert next(iter(fields)) in str(caught.value)
    assert sandbox.record(KIND, "customer:1001")["bill_status"] == "S"


@pytest.mark.parametrize(
    "fields",
    [
        {"bill_status": "X"},
        {"credit_limit": "abc"},
        {"country": "United Kingdom"},
        {"blocked": True},
    ],
)
def test_bad_rendered_value_is_invalid_fields_without_a_call(porta, sandbox, fields):
    with pytest.raises(errors.InvalidFields):
        porta.apply("update_customer", 1001, fields)
    assert sandbox.log(KIND) == []


def test_non_numeric_target_is_invalid_fields_without_a_call(porta, sandbox):
    with pytest.raises(errors.InvalidFields):
        porta.apply("update_customer", "acme", {"bill_status": "O"})
    assert sandbox.log(KIND) == []


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_is_unavailable(porta, sandbox, status):
    porta.session_id()  # log in first, so the injected failure hits the update itself
    sandbox.knobs(KIND, fail_next=2, fail_status=status)
    with pytest.raises(errors.Unavailable) as caught:
        porta.apply("update_customer", 1001, {"bill_status": "O"})
    assert caught.value.status == status
    # a 500 fault may be a dead session (its code is not known): one new login and call
    assert len(calls(sandbox, "login")) == (2 if status == 500 else 1)


def test_failure_at_login_is_unavailable(porta, sandbox):
    sandbox.knobs(KIND, fail_next=1, fail_status=503)
    with pytest.raises(errors.Unavailable):
        porta.apply("update_customer", 1001, {"bill_status": "O"})


def test_429_is_rate_limited_with_retry_after(porta, sandbox):
    sandbox.knobs(KIND, ratelimit_next=1, retry_after="7")
    with pytest.raises(errors.RateLimited) as caught:
        porta.apply("update_customer", 1001, {"bill_status": "O"})
    assert caught.value.retry_after == 7


def test_hang_is_a_timeout(sandbox):
    sandbox.knobs(KIND, hang_next=1, hang_seconds=1)
    with pytest.raises(errors.Timeout):
        make(sandbox, timeout=0.3).apply("update_customer", 1001, {"bill_status": "O"})


def test_redirect_is_rejected_naming_the_location(porta, sandbox):
    porta.session_id()
    sandbox.knobs(KIND, fail_next=1, fail_status=301)
    with pytest.raises(errors.Rejected) as caught:
        porta.apply("update_customer", 1001, {"bill_status": "O"})
    assert "https://" in str(caught.value)
    assert "/rest/Customer/update_customer" in str(caught.value)
    assert sandbox.record(KIND, "customer:1001")["bill_status"] == "S"


def test_no_error_text_carries_credentials_or_session(sandbox):
    connector = make(sandbox)
    session = connector.session_id()
    caught: list[errors.VendorError] = []

    def collect(call: Any) -> None:
        try:
            call()
        except errors.VendorError as exc:
            caught.append(exc)

    collect(lambda: connector.apply("update_customer", 999999, {"note": "x"}))
    collect(lambda: connector.op_update_customer(1001, {"bill_status": "X"}))
    for knobs in (
        {"fail_next": 2, "fail_status": 500},  # a 500 fault is called again once
        {"fail_next": 1, "fail_status": 301},
        {"ratelimit_next": 1},
    ):
        sandbox.knobs(KIND, **knobs)
        collect(lambda: connector.apply("update_customer", 1001, {"note": "x"}))
    sandbox.expire(KIND)
    collect(
        lambda: make(sandbox, login=LOGIN, password="bad-pass").apply("update_customer", 1001, {})
    )
    collect(
        lambda: make(sandbox, login=LOGIN, token="bad-token").apply("update_customer", 1001, {})
    )
    assert len(caught) == 7
    secrets = [TOKEN, PASSWORD, LOGIN, session, "bad-pass", "bad-token"]
    for exc in caught:
        text = f"{exc} {exc.args} {exc.excerpt}"
        assert not [s for s in secrets if s in text], text
