"""PerfexCRM connector against its simulator over real HTTP (no Celery involved here)."""

from __future__ import annotations

import pytest

from worker.vendors import errors
from worker.vendors.base import VendorInstance
from worker.vendors.perfexcrm import PerfexCRM


@pytest.fixture
def perfex(sandbox):
    instance = VendorInstance(
        name="perfex",
        kind="perfexcrm",
        base_url=sandbox.base("perfexcrm"),
        auth={"token": "perfex-demo-token"},
        timeout=2,
    )
    connector = PerfexCRM(instance)
    yield connector
    connector.close()


def test_update_customer_changes_the_record(perfex, sandbox):
    perfex.apply("update_customer", "7", {"city": "Manchester", "active": False, "zip": "M1 1AE"})
    record = sandbox.record("perfexcrm", 7)
    assert (record["city"], record["active"], record["zip"]) == ("Manchester", "0", "M1 1AE")


def test_unknown_customer_is_not_found(perfex):
    with pytest.raises(errors.NotFound):
        perfex.apply("update_customer", "999", {"city": "X"})


def test_wrong_token_is_auth_failed(sandbox):
    instance = VendorInstance(
        name="p", kind="perfexcrm", base_url=sandbox.base("perfexcrm"), auth={"token": "wrong"}
    )
    with pytest.raises(errors.AuthFailed) as caught:
        PerfexCRM(instance).apply("update_customer", "7", {"city": "X"})
    assert "wrong" not in str(caught.value)


@pytest.mark.parametrize(
    "fields",
    [
        {"country": "United Kingdom"},
        {"groups_in": [1.7]},  # truncated to group 1, it would move the customer
        {"default_currency": 2.5},
        {"country": "\u0667"},  # ARABIC-INDIC DIGIT SEVEN: str.isdigit says yes
        {"billing_country": "\u00b2"},  # SUPERSCRIPT TWO
    ],
)
def test_invalid_field_value_is_refused_before_any_call(perfex, sandbox, fields):
    with pytest.raises(errors.InvalidFields):
        perfex.apply("update_customer", "7", fields)
    assert sandbox.log("perfexcrm") == []


def test_5xx_is_retryable(perfex, sandbox):
    sandbox.knobs("perfexcrm", fail_next=1, fail_status=502)
    with pytest.raises(errors.Unavailable):
        perfex.apply("update_customer", "7", {"city": "X"})


def test_429_carries_retry_after(perfex, sandbox):
    sandbox.knobs("perfexcrm", ratelimit_next=1, retry_after="7")
    with pytest.raises(errors.RateLimited) as caught:
        perfex.apply("update_customer", "7", {"city": "X"})
    assert caught.value.retry_after == 7


def test_hang_is_a_timeout(sandbox):
    instance = VendorInstance(
        name="p",
        kind="perfexcrm",
        base_url=sandbox.base("perfexcrm"),
        auth={"token": "perfex-demo-token"},
        timeout=0.3,
    )
    sandbox.knobs("perfexcrm", hang_next=1, hang_seconds=1)
    with pytest.raises(errors.Timeout):
        PerfexCRM(instance).apply("update_customer", "7", {"city": "X"})
