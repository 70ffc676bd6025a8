"""Soliditech connector against its simulator over real HTTP (no Celery involved here)."""

from __future__ import annotations

import httpx
import pytest
from marshmallow import fields as mfields

from config.errors import ConfigError
from config.loader import load_config
from worker.vendors import CONNECTORS, errors
from worker.vendors.base import VendorInstance
from worker.vendors.soliditech import Soliditech, UpdateCustomer

KEY = "soli-demo-key"


def make(sandbox, timeout: float = 2, key: str = KEY, **options) -> Soliditech:
    instance = VendorInstance(
        name="soli",
        kind="soliditech",
        base_url=sandbox.base("soliditech"),
        auth={"api_key": key},
        options=options,
        timeout=timeout,
    )
    return Soliditech(instance)


@pytest.fixture
def soli(sandbox):
    connector = make(sandbox)
    yield connector
    connector.close()


def sim_wire(sandbox, **values) -> None:
    sandbox.http.post("/soliditech/_sim/wire", json=values).raise_for_status()


def test_is_registered_by_kind():
    assert CONNECTORS["soliditech"] is Soliditech


def test_update_customer_changes_the_record(soli, sandbox):
    result = soli.apply(
        "update_customer",
        "5005",
        {
            "account_use": "Residential",
            "price_list_id": 2,
            "physical_address": {"city": "Bristol", "street_code": "BS1 4DJ"},
        },
    )
    assert result == {"status": 200, "account_id": "5005"}
    record = sandbox.record("soliditech", 5005)
    assert (record["accountUse"], record["priceListId"]) == ("Residential", 2)
    assert record["physicalAddress"]["city"] == "Bristol"
    assert record["physicalAddress"]["streetCode"] == "BS1 4DJ"
    assert record["physicalAddress"]["addressLine1"] == "1 Old Street"  # untouched


def test_snake_case_fields_travel_as_camel_case(soli, sandbox):
    soli.apply(
        "update_customer",
        5006,
        {
            "ticket_center": "North",
            "invoice_cycle_type": "Monthly",
            "business_details": {"vat_number": "GB123", "id_number_type": "Company"},
            "primary_contact": {"first_name": "Ann", "job_title": "CFO", "email": "ann@x.com"},
            "postal_address": {"address_line1": "PO Box 9", "postal_code": "LS1 1AA"},
        },
    )
    (entry,) = sandbox.log("soliditech")
    assert (entry["method"], entry["path"]) == ("PUT", "/api/customers/5006")
    assert entry["body"] == {
        "ticketCenter": "North",
        "invoiceCycleType": "Monthly",
        "businessDetails": {"vatNumber": "GB123", "idNumberType": "Company"},
        "primaryContact": {"firstName": "Ann", "jobTitle": "CFO", "email": "ann@x.com"},
        "postalAddress": {"addressLine1": "PO Box 9", "postalCode": "LS1 1AA"},
    }


def test_every_field_has_a_wire_name():
    def walk(schema):
        for name, field in schema.fields.items():
            assert field.metadata.get("wire"), name
            if isinstance(field, mfields.Nested):
                walk(field.schema)

    walk(UpdateCustomer())


def test_configured_path_method_and_header_are_honoured(sandbox):
    wire = {
        "method": "PATCH",
        "path": "/v2/accounts/{account_id}/profile",
        "auth_header": "Authorization",
        "auth_prefix": "Bearer ",
    }
    sim_wire(sandbox, **wire)
    make(sandbox, **wire).apply("update_customer", 5005, {"tax_type": "Exempt"})
    assert sandbox.record("soliditech", 5005)["taxType"] == "Exempt"
    (entry,) = sandbox.log("soliditech")
    assert (entry["method"], entry["path"]) == ("PATCH", "/v2/accounts/5005/profile")


def test_default_wire_against_a_changed_vendor_fails_cleanly(soli, sandbox):
    sim_wire(sandbox, auth_header="X-Soli-Token")
    with pytest.raises(errors.AuthFailed) as caught:
        soli.apply("update_customer", 5005, {"tax_type": "Exempt"})
    assert KEY not in str(caught.value) and KEY not in (caught.value.excerpt or "")


def test_wrong_api_key_is_auth_failed_without_the_key(sandbox):
    with pytest.raises(errors.AuthFailed) as caught:
        make(sandbox, key="wrong-key-value").apply("update_customer", 5005, {"dealer": "X"})
    assert caught.value.status == 401
    assert "wrong-key-value" not in str(caught.value)
    assert "wrong-key-value" not in (caught.value.excerpt or "")


def test_unknown_account_is_not_found(soli):
    with pytest.raises(errors.NotFound) as caught:
        soli.apply("update_customer", 9999, {"dealer": "X"})
    assert caught.value.status == 404


def test_a_wrong_path_is_rejected_naming_the_option_not_a_missing_account(sandbox):
    # the wire format is inferred: a 404 for a path the API lacks is no unknown customer
    wrong = make(sandbox, path="/api/v2/accounts/{account_id}")
    with pytest.raises(errors.Rejected) as caught:
        wrong.apply("update_customer", 5005, {"dealer": "X"})
    assert caught.value.status == 404 and "options.path" in str(caught.value)


def test_an_account_id_with_a_trailing_newline_is_refused_before_any_call(soli, sandbox):
    with pytest.raises(errors.InvalidFields):
        soli.apply("update_customer", "5005\n", {"dealer": "X"})
    assert sandbox.log("soliditech") == []


def test_vendor_validation_error_is_rejected(soli, sandbox):
    with pytest.raises(errors.Rejected) as caught:
        soli.apply("update_customer", 5005, {"price_list_id": 42})  # no such price list
    assert caught.value.status == 422
    assert "priceListId" in str(caught.value)
    assert sandbox.record("soliditech", 5005)["priceListId"] == 1


@pytest.mark.parametrize(
    "fields",
    [
        {"price_list_id": "two"},
        {"price_list_id": 2.5},
        {"primary_contact": {"email": "nope"}},
        {"physical_address": {"gps": "51.5,-0.1"}},
        {"physical_address": "London"},
        {"accountUse": "Business"},
        {"account_use": True},  # a number is written as text; a boolean is no text
    ],
)
def test_invalid_field_value_is_refused_before_any_call(soli, sandbox, fields):
    with pytest.raises(errors.InvalidFields):
        soli.apply("update_customer", 5005, fields)
    assert sandbox.log("soliditech") == []


def test_unsafe_account_id_is_refused_before_any_call(soli, sandbox):
    with pytest.raises(errors.InvalidFields):
        soli.apply("update_customer", "../admin", {"dealer": "X"})
    assert sandbox.log("soliditech") == []


def test_simulator_enforces_wire_names_and_types(sandbox):
    http = httpx.Client(base_url=sandbox.base("soliditech"), headers={"X-API-Key": KEY})
    for body in (
        {"account_use": "Business"},
        {"priceListId": "2"},
        {"physicalAddress": {"city": 5}},
        {"primaryContact": {"email": "x"}},
    ):
        answer = http.put("/api/customers/5005", json=body)
        assert answer.status_code == 422, body
        assert answer.json()["message"] == "Validation failed"
    assert http.put("/api/customers/5005", json=[1]).status_code == 400
    assert http.get("/api/customers/5005").json()["businessDetails"]["businessName"] == "Acme Ltd"


def test_5xx_is_unavailable(soli, sandbox):
    sandbox.knobs("soliditech", fail_next=1, fail_status=500)
    with pytest.raises(errors.Unavailable):
        soli.apply("update_customer", 5005, {"dealer": "X"})


def test_429_carries_retry_after(soli, sandbox):
    sandbox.knobs("soliditech", ratelimit_next=1, retry_after="4")
    with pytest.raises(errors.RateLimited) as caught:
        soli.apply("update_customer", 5005, {"dealer": "X"})
    assert caught.value.retry_after == 4


def test_hang_is_a_timeout(sandbox):
    sandbox.knobs("soliditech", hang_next=1, hang_seconds=1)
    with pytest.raises(errors.Timeout):
        make(sandbox, timeout=0.3).apply("update_customer", 5005, {"dealer": "X"})


def test_redirect_is_rejected_naming_the_location(soli, sandbox):
    sandbox.knobs("soliditech", fail_next=1, fail_status=301)
    with pytest.raises(errors.Rejected) as caught:
        soli.apply("update_customer", 5005, {"dealer": "X"})
    assert "https://login.example.com/" in str(caught.value)
    assert sandbox.record("soliditech", 5005)["dealer"] == ""


CONFIG = """
sources:
  portal: {kind: hmac, secret: "portal-secret", header: X-Signature,
           id: "{{ payload.event_id }}", type: "{{ payload.event }}",
           occurred_at: "{{ payload.at }}"}
vendors:
  soli: {kind: soliditech, base_url: "http://127.0.0.1:8100/soliditech",
         auth: {api_key: "soli-demo-key"}, options: OPTIONS}
rules:
  - name: move
    source: portal
    events: [moved]
    actions:
      - vendor: soli
        op: update_customer
        target: "{{ payload.account }}"
        fields: FIELDS
"""


def load(tmp_path, options: str, fields: str):
    path = tmp_path / "switchboard.yaml"
    path.write_text(CONFIG.replace("OPTIONS", options).replace("FIELDS", fields))
    return load_config(path, env={})


def test_config_accepts_nested_snake_case_fields_and_applies_option_defaults(tmp_path):
    config = load(tmp_path, "{}", '{physical_address: {city: "{{ payload.city }}"}}')
    options = config.vendors["soli"].options
    assert options["method"] == "PUT" and options["auth_header"] == "X-API-Key"


def test_config_check_rejects_unknown_nested_names(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, "{}", "{physical_address: {town: London}, primary_contact: {email: nope}}")
    text = str(caught.value)
    assert "fields.physical_address.town" in text
    assert "fields.primary_contact.email" in text


def test_config_check_rejects_bad_wire_options(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, "{path: /api/customers, method: GET}", "{dealer: North}")
    text = str(caught.value)
    assert "vendors.soli.options.path" in text and "{account_id}" in text
    assert "vendors.soli.options.method" in text
