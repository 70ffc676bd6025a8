"""Field versions are kept per field and per member of a group of fields (dotted)."""

from __future__ import annotations

from worker.ordering import dotted, pick, split_by_versions, version_names
from worker.vendors.portabilling import PortaBilling
from worker.vendors.soliditech import Soliditech

FIELDS = {"account_use": "Residential", "physical_address": {"city": "Leeds", "code": "LS1"}}


def test_a_group_is_versioned_by_member():
    assert version_names(FIELDS) == [
        "account_use",
        "physical_address.city",
        "physical_address.code",
    ]
    assert version_names({"empty": {}}) == ["empty"]  # nothing to split: the field itself


def test_only_the_fresh_members_are_sent():
    fresh, stale = split_by_versions(FIELDS, [None, 2000.0, 500.0], 1000.0)
    assert dotted(stale) == ["physical_address.city"]
    assert pick(FIELDS, fresh) == {
        "account_use": "Residential",
        "physical_address": {"code": "LS1"},
    }


def test_pick_skips_a_member_validation_left_out():
    assert pick({"a": {"b": 1}}, [("a", "b"), ("a", "c"), ("x", "y")]) == {"a": {"b": 1}}


def test_a_member_whose_name_holds_a_dot_is_still_sent():
    # Perfex custom_fields ids are free keys: "a.b" was split and silently never sent
    fields = {"custom_fields": {"customers": {"a.b": "x", "7": "z"}}}
    fresh, _ = split_by_versions(fields, [None, None], 1.0)
    assert pick(fields, fresh) == fields


def test_record_keys_tell_porta_customers_from_accounts_and_leave_others_as_the_target():
    assert PortaBilling.record_key("update_customer", "1001") == "customer:1001"
    assert PortaBilling.record_key("update_account", "1001") == "account:1001"
    assert Soliditech.record_key("update_customer", "5005") == "5005"
