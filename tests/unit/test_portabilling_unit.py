"""PortaBilling connector pieces that need no simulator: fault classification, wire
values, config schemas, and (through an httpx transport standing in for the vendor)
redaction of echoed secrets and the refresh-once-then-auth_failed rule."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from urllib.parse import parse_qs

import httpx
import pytest
from marshmallow import ValidationError

from worker.vendors import errors
from worker.vendors.base import VendorInstance
from worker.vendors.portabilling import (
    PortaAuth,
    PortaBilling,
    PortaOptions,
    UpdateCustomer,
    classify_fault,
    classify_status,
    fault_of,
)


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("Server.Customer.customer_not_found", errors.NotFound),
        ("Server.Account.account_not_found", errors.NotFound),
        ("Client.Customer.customer_not_found", errors.NotFound),
        ("Server.Session.check_auth.auth_failed", errors.AuthExpired),
        ("Server.Session.auth_failed", errors.AuthExpired),
        ("Client.Customer.validation_error", errors.Rejected),
        ("Server.Customer.internal_error", errors.Unavailable),
        ("", errors.Unavailable),
        (None, errors.Unavailable),
    ],
)
def test_fault_codes_are_classified_by_substring(code, error):
    assert classify_fault(code) is error


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (200, None),
        (401, errors.AuthExpired),
        (404, errors.Rejected),
        (400, errors.Rejected),
        (500, errors.Unavailable),
        (502, errors.Unavailable),
        (504, errors.Unavailable),
    ],
)
def test_statuses_without_a_fault_body(status, error):
    assert classify_status(status) is error


def test_fault_of_reads_only_fault_bodies():
    assert fault_of({"faultcode": "Client.X", "faultstring": "bad"}) == ("Client.X", "bad")
    assert fault_of({"i_customer": 1}) is None
    assert fault_of("<html>") is None


@pytest.mark.parametrize(
    ("given", "wire"),
    [
        ("2025-06-01 10:00:00", "2025-06-01 10:00:00"),
        ("2025-06-01T12:00:00+02:00", "2025-06-01 10:00:00"),
        ("2025-06-01T10:00:00Z", "2025-06-01 10:00:00"),
        ("2025-06-01", "2025-06-01 00:00:00"),
        (datetime(2025, 6, 1, 10, tzinfo=UTC), "2025-06-01 10:00:00"),
        # unix times as Stripe (s) and HubSpot (ms) send them: no template converts them
        (1748772000, "2025-06-01 10:00:00"),
        (1748772000123, "2025-06-01 10:00:00"),
        ("1748772000", "2025-06-01 10:00:00"),
    ],
)
def test_datetimes_go_out_as_utc_wire_text(given, wire):
    assert UpdateCustomer().load({"deactivate_on": given}) == {"deactivate_on": wire}


def test_booleans_go_out_as_one_or_zero():
    loaded = UpdateCustomer().load({"credit_exceed": True, "bill_suspension_delayed": "0"})
    assert loaded == {"credit_exceed": 1, "bill_suspension_delayed": 0}


@pytest.mark.parametrize(
    "fields",
    [
        {"bill_status": "D"},
        {"blocked": "yes"},
        {"city": "x" * 32},
        {"country": "GBR"},
        {"credit_limit": "abc"},
        {"iso_4217": "gbp"},
        {"deactivate_on": "tomorrow"},
        {"deactivate_on": True},
        {"deactivate_on": 2024},  # a year, not 33 minutes into 1970
        {"i_customer": 5},
        {"i_customer_class": 4.5},  # truncated, it would name another class
        {"unknown": 1},
    ],
)
def test_schema_refuses_bad_values_and_unknown_fields(fields):
    with pytest.raises(ValidationError):
        UpdateCustomer().load(fields)


@pytest.mark.parametrize(
    "auth",
    [
        {"login": "a"},
        {"login": "a", "token": "t", "password": "p"},
        {"token": "t"},
    ],
)
def test_auth_needs_login_and_exactly_one_secret(auth):
    with pytest.raises(ValidationError):
        PortaAuth().load(auth)


def test_auth_and_options_defaults():
    assert PortaAuth().load({"login": "a", "password": "p"}) == {"login": "a", "password": "p"}
    assert PortaOptions().load({}) == {"content_type": "form"}
    with pytest.raises(ValidationError):
        PortaOptions().load({"content_type": "xml"})


# -- through a stand-in transport ------------------------------------------------------
SESSION = "sess-0123456789abcdef"


def connector(handler, **auth: str) -> PortaBilling:
    instance = VendorInstance(
        name="porta",
        kind="portabilling",
        base_url="https://porta.test",
        auth=auth or {"login": "api-user", "token": "tok-secret-value"},
    )
    return PortaBilling(instance, transport=httpx.MockTransport(handler))


def documents(request: httpx.Request) -> dict:
    form = parse_qs(request.content.decode())
    return {key: json.loads(values[0]) for key, values in form.items()}


def test_echoed_secrets_are_redacted_from_message_and_excerpt():
    def echo(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/login"):
            return httpx.Response(200, json={"session_id": SESSION})
        return httpx.Response(
            500,
            json={
                "faultcode": "Client.Customer.validation_error",
                "faultstring": f"bad request {request.content.decode()} from api-user",
            },
        )

    with pytest.raises(errors.Rejected) as caught:
        connector(echo).apply("update_customer", 1001, {"bill_status": "O"})
    text = f"{caught.value} {caught.value.args} {caught.value.excerpt}"
    assert SESSION not in text and "api-user" not in text
    assert "[redacted]" in caught.value.excerpt


def test_second_auth_fault_after_a_new_login_is_auth_failed():
    logins = []

    def refuse(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/login"):
            logins.append(documents(request)["params"])
            return httpx.Response(200, json={"session_id": f"{SESSION}-{len(logins)}"})
        return httpx.Response(
            500,
            json={
                "faultcode": "Server.Session.check_auth.auth_failed",
                "faultstring": "Authentication failed",
            },
        )

    with pytest.raises(errors.AuthFailed):
        connector(refuse).apply("update_customer", 1001, {"bill_status": "O"})
    assert logins == [{"login": "api-user", "token": "tok-secret-value"}] * 2


def test_login_without_session_id_is_unavailable():
    def empty(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={})

    with pytest.raises(errors.Unavailable):
        connector(empty).apply("update_customer", 1001, {"bill_status": "O"})


def test_non_json_success_is_rejected():
    def html(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/login"):
            return httpx.Response(200, json={"session_id": SESSION})
        return httpx.Response(200, text="<html>welcome</html>")

    with pytest.raises(errors.Rejected, match="base_url"):
        connector(html).apply("update_customer", 1001, {"bill_status": "O"})


def test_404_with_a_not_found_fault_is_not_a_missing_record():
    def wrong_path(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/login"):
            return httpx.Response(200, json={"session_id": SESSION})
        return httpx.Response(
            404,
            json={"faultcode": "Client.Generic.method_not_found", "faultstring": "no such method"},
        )

    with pytest.raises(errors.Rejected):
        connector(wrong_path).apply("update_customer", 1001, {"bill_status": "O"})


@pytest.mark.parametrize("code", ["Server.Session.user_not_found", "Client.Session.bad_login"])
def test_any_refused_login_is_auth_failed(code):
    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, json={"faultcode": code, "faultstring": "no"})

    with pytest.raises(errors.AuthFailed):
        connector(refuse).apply("update_customer", 1001, {"bill_status": "O"})


@pytest.mark.parametrize("target", [1001.7, "1001.7", True, 0, "abc"])
def test_a_target_that_is_not_a_whole_id_is_refused_not_truncated(target):
    connector = PortaBilling(VendorInstance("porta", "portabilling", "http://porta.invalid"))
    with pytest.raises(errors.InvalidFields):
        connector.validate_target(target)
    assert connector.validate_target("1001") == connector.validate_target(1001.0) == 1001


def test_a_5xx_that_says_when_to_come_back_is_heard():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/Session/login"):
            return httpx.Response(200, json={"session_id": SESSION})
        return httpx.Response(503, headers={"Retry-After": "120"}, text="maintenance")

    with pytest.raises(errors.Unavailable) as caught:
        connector(handler).apply("update_customer", "1001", {"bill_status": "O"})
    assert caught.value.retry_after == 120.0


def test_any_connector_hears_retry_after_on_a_5xx():
    from worker.vendors.perfexcrm import PerfexCRM

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, headers={"Retry-After": "45"}, json={"status": False})

    instance = VendorInstance("perfex", "perfexcrm", "https://crm.test", auth={"token": "t"})
    perfex = PerfexCRM(instance, transport=httpx.MockTransport(handler))
    with pytest.raises(errors.Unavailable) as caught:
        perfex.apply("update_customer", "7", {"city": "X"})
    assert caught.value.retry_after == 45.0
