"""Config validation: every error names the file, the YAML path and the problem."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from config.errors import ConfigError
from config.loader import load_config
from config.schemas import parse_rate

BASE = """
sources:
  stripe: {kind: stripe, secret: whsec_x}
vendors:
  perfex: {kind: perfexcrm, base_url: "http://127.0.0.1:8100/perfexcrm", auth: {token: t0ken}}
  porta:
    kind: portabilling
    base_url: "http://127.0.0.1:8100/portabilling"
    auth: {login: l, token: tok3n}
rules:
  - name: r
    source: stripe
    events: [invoice.paid]
    actions:
      - vendor: porta
        op: update_customer
        target: "{{ payload.id }}"
        fields: {bill_status: O}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "switchboard.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env or {})
    for problem in caught.value.problems:
        assert problem.file == str(path)
    return [f"{p.path}: {p.message}" for p in caught.value.problems]


def one(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    found = problems(tmp_path, text, env)
    assert len(found) == 1, found
    return found[0]


def test_the_base_config_loads(tmp_path):
    config = load_config(write(tmp_path, BASE), {})
    assert list(config.vendors) == ["perfex", "porta"]
    assert {"t0ken", "tok3n", "whsec_x"} <= config.secrets


def test_the_shipped_demo_config_is_valid():
    config = load_config(Path(__file__).resolve().parents[2] / "config" / "switchboard.yaml", {})
    assert len(config.rules) >= 4
    assert {v.kind for v in config.vendors.values()} == {
        "portabilling",
        "perfexcrm",
        "soliditech",
        "halopsa",
    }


def test_unknown_source_in_a_rule(tmp_path):
    assert one(tmp_path, BASE.replace("source: stripe", "source: strype")) == (
        "rules[0].source: unknown source 'strype'"
    )


def test_unknown_vendor(tmp_path):
    assert one(tmp_path, BASE.replace("- vendor: porta", "- vendor: portal")) == (
        "rules[0].actions[0].vendor: unknown vendor 'portal'"
    )


def test_unknown_vendor_kind(tmp_path):
    found = one(tmp_path, BASE.replace("kind: perfexcrm", "kind: perfex"))
    assert found.startswith("vendors.perfex.kind: unknown vendor kind 'perfex'")


def test_unknown_op(tmp_path):
    found = one(tmp_path, BASE.replace("op: update_customer", "op: delete_customer"))
    assert found.startswith("rules[0].actions[0].op: portabilling has no op 'delete_customer'")


def test_unknown_field_for_the_op(tmp_path):
    found = one(tmp_path, BASE.replace("{bill_status: O}", "{bill_state: O}"))
    assert found.startswith(
        "rules[0].actions[0].fields.bill_state: unknown field 'bill_state' "
        "for portabilling.update_customer"
    )


def test_constant_field_value_outside_the_allowed_values(tmp_path):
    found = one(tmp_path, BASE.replace("{bill_status: O}", "{bill_status: X}"))
    assert found.startswith("rules[0].actions[0].fields.bill_status:")
    assert "'X'" in found


def test_template_syntax_error(tmp_path):
    found = one(tmp_path, BASE.replace('"{{ payload.id }}"', '"{{ payload.id "'))
    assert found.startswith("rules[0].actions[0].target: template syntax error")


def test_if_expression_syntax_error(tmp_path):
    text = BASE.replace("    events: [invoice.paid]", "    events: [invoice.paid]\n    if: 'a is'")
    assert one(tmp_path, text).startswith("rules[0].if: expression syntax error")


def test_missing_environment_variable(tmp_path):
    text = BASE.replace("secret: whsec_x", 'secret: "${STRIPE_SECRET}"')
    assert one(tmp_path, text) == (
        "sources.stripe.secret: environment variable STRIPE_SECRET is not set"
    )


def test_environment_variable_and_default(tmp_path):
    text = BASE.replace("secret: whsec_x", 'secret: "${STRIPE_SECRET:-whsec_default}"')
    path = write(tmp_path, text)
    assert load_config(path, {}).sources["stripe"].settings["secret"] == ["whsec_default"]
    given = load_config(path, {"STRIPE_SECRET": "whsec_env"})
    assert given.sources["stripe"].settings["secret"] == ["whsec_env"]


def test_bad_rate_limit_string(tmp_path):
    text = BASE.replace(
        "auth: {login: l, token: tok3n}", "auth: {login: l, token: tok3n}\n    rate_limit: fast"
    )
    assert one(tmp_path, text).startswith("vendors.porta.rate_limit: 'fast' is not a rate")


def test_missing_auth_field(tmp_path):
    found = one(tmp_path, BASE.replace("auth: {token: t0ken}", "auth: {}"))
    assert found == "vendors.perfex.auth.token: Missing data for required field."


def test_unknown_source_kind(tmp_path):
    found = one(tmp_path, BASE.replace("kind: stripe", "kind: paypal"))
    assert found.startswith("sources.stripe.kind: unknown source kind 'paypal'")


def test_duplicate_rule_names(tmp_path):
    rule = BASE[BASE.index("  - name: r") :]
    assert one(tmp_path, BASE + rule) == "rules[1].name: duplicate rule name 'r'"


def test_yaml_syntax_error_names_the_line(tmp_path):
    found = one(tmp_path, "sources: {stripe: [\n")
    assert "line" in found and "not valid YAML" in found


def test_several_problems_are_all_reported(tmp_path):
    text = BASE.replace("source: stripe", "source: nope").replace(
        "{bill_status: O}", "{bill_state: O}"
    )
    assert len(problems(tmp_path, text)) == 2


@pytest.mark.parametrize(
    "vendor_fault",
    [
        ('base_url: "http://127.0.0.1:8100/portabilling"', 'base_url: "not a url"'),
        ("auth: {login: l, token: tok3n}", "auth: {login: l}"),
        ("auth: {login: l, token: tok3n}", 'auth: {login: l, token: l}\n    rate_limit: "2/x"'),
    ],
    ids=["base_url", "auth", "rate_limit"],
)
def test_a_vendors_own_problem_does_not_hide_its_actions_problems(tmp_path, vendor_fault):
    # `config check` promises every problem at once: the actions of a vendor with a bad
    # setting went unchecked, so their problems showed only once the vendor was fixed
    text = BASE.replace(*vendor_fault).replace("{bill_status: O}", "{bill_status: Z, nosuch: 1}")
    found = problems(tmp_path, text)
    assert any(p.startswith("vendors.porta") for p in found), found
    assert any(p.startswith("rules[0].actions[0].fields.bill_status") for p in found), found
    assert any(p.startswith("rules[0].actions[0].fields.nosuch") for p in found), found


def test_an_action_on_a_vendor_of_unknown_kind_is_not_checked_twice(tmp_path):
    text = BASE.replace("kind: portabilling", "kind: nosuchkind")
    assert [p.split(":")[0] for p in problems(tmp_path, text)] == ["vendors.porta.kind"]


@pytest.mark.parametrize(
    ("old", "new", "where"),
    [
        ("events: [invoice.paid]", 'events: [invoice.paid]\n    if: "paylod.id is defined"', "if"),
        ("{bill_status: O}", '{bill_status: "{{ paylod.status }}"}', "fields.bill_status"),
        ('target: "{{ payload.id }}"', 'target: "{{ data.id }}"', "target"),
    ],
)
def test_a_name_a_rule_cannot_see_is_a_config_error(tmp_path, old, new, where):
    # a typo in an if: was quietly never true; in a field it failed on every event
    found = one(tmp_path, BASE.replace(old, new))
    assert found.startswith("rules[0].") and where in found and "unknown name" in found


def test_names_a_rule_can_see_pass(tmp_path):
    text = BASE.replace(
        "{bill_status: O}",
        '{bill_status: "{% for k in range(1) %}{% set s = event.type %}{% endfor %}O"}',
    )
    assert load_config(write(tmp_path, text), {}).rules


def test_constants_in_a_list_field_are_checked_at_load(tmp_path):
    # groups_in: [0, "abc"] passed config check and failed every task as invalid_fields
    text = (
        BASE.replace("vendor: porta", "vendor: perfex")
        .replace('target: "{{ payload.id }}"', "target: 7")
        .replace("{bill_status: O}", '{groups_in: [0, "abc", "{{ payload.id }}", 3]}')
    )
    found = problems(tmp_path, text)
    assert [p.split(":")[0] for p in found] == [
        "rules[0].actions[0].fields.groups_in[0]",
        "rules[0].actions[0].fields.groups_in[1]",
    ], found


def test_two_actions_of_a_rule_setting_one_field_of_one_record_is_an_error(tmp_path):
    # both run as tasks of one event, equally new: the vendor kept either, by chance
    twice = BASE.replace(
        "        fields: {bill_status: O}",
        "        fields: {bill_status: O}\n"
        "      - vendor: porta\n"
        "        op: update_customer\n"
        '        target: "{{ payload.id }}"\n'
        "        fields: {bill_status: S, credit_limit: 5}",
    )
    found = one(tmp_path, twice)
    assert found.startswith("rules[0].actions[1].fields.bill_status: actions[0] sets")
    other_record = twice.replace(
        'target: "{{ payload.id }}"\n        fields: {bill_status: S',
        'target: "{{ payload.other }}"\n        fields: {bill_status: S',
    )
    assert load_config(write(tmp_path, other_record), {}).rules


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "absent.yaml", {})
    assert "cannot read" in str(caught.value)


@pytest.mark.parametrize(
    "text,expected",
    [("20/s", (20, 1.0)), ("600/min", (600, 60.0)), ("100/10s", (100, 10.0)), ("5/h", (5, 3600.0))],
)
def test_parse_rate(text, expected):
    assert parse_rate(text) == expected


def test_a_key_given_twice_is_named_with_both_lines(tmp_path):
    text = BASE.replace(
        "  stripe: {kind: stripe, secret: whsec_x}",
        "  stripe: {kind: stripe, secret: whsec_x}\n  stripe: {kind: hubspot, secret: other}",
    )
    found = one(tmp_path, text)
    assert "key 'stripe' is given twice" in found and "first on line 3" in found
    assert "line 4" in found


def test_a_key_twice_in_one_flow_mapping_is_an_error_too(tmp_path):
    found = one(tmp_path, BASE.replace("{bill_status: O}", "{bill_status: O, bill_status: C}"))
    assert "key 'bill_status' is given twice" in found


def test_a_merged_key_may_be_overridden(tmp_path):
    text = BASE.replace(
        "  perfex: {kind: perfexcrm,",
        "  base: &base {kind: perfexcrm, base_url: 'http://x/perfexcrm', auth: {token: t1}}\n"
        "  perfex2: {<<: *base, auth: {token: t2}}\n"
        "  perfex: {kind: perfexcrm,",
    )
    config = load_config(write(tmp_path, text), {})
    assert config.vendors["perfex2"].auth["token"] == "t2"


def test_a_file_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "switchboard.yaml"
    path.write_bytes(BASE.encode().replace(b"whsec_x", b"whsec_\xe9"))
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    assert str(caught.value) == f"{path}: not UTF-8 text (byte 49 is 0xe9)"


def test_a_list_for_a_single_value_field_is_a_config_error(tmp_path):
    found = one(tmp_path, BASE.replace("{bill_status: O}", "{bill_status: [O]}"))
    assert found.startswith("rules[0].actions[0].fields.bill_status: ")


def test_a_rate_over_no_time_is_refused(tmp_path):
    text = BASE.replace(
        "auth: {login: l, token: tok3n}", "auth: {login: l, token: tok3n}\n    rate_limit: 5/0s"
    )
    assert "window above zero" in one(tmp_path, text)


@pytest.mark.parametrize(
    "template", ["{% extends 'base' %}", "{% include 'x' %}", "{% import 'm' as m %}{{ 1 }}"]
)
def test_a_template_that_loads_another_is_refused(tmp_path, template):
    found = one(tmp_path, BASE.replace('"{{ payload.id }}"', f'"{template}"'))
    assert found == (
        "rules[0].actions[0].target: templates cannot extend, include or import other templates"
    )


def test_a_shared_concurrency_cap_is_read_and_checked(tmp_path):
    capped = BASE.replace("auth: {token: t0ken}}", "auth: {token: t0ken}, concurrency: 3}")
    assert load_config(write(tmp_path, capped), {}).vendors["perfex"].concurrency == 3
    # unset: PerfexCRM's vendor file default ("5 in flight"); null: no shared cap
    assert load_config(write(tmp_path, BASE), {}).vendors["perfex"].concurrency == 5
    lifted = BASE.replace("auth: {token: t0ken}}", "auth: {token: t0ken}, concurrency: null}")
    assert load_config(write(tmp_path, lifted), {}).vendors["perfex"].concurrency is None
    zero = BASE.replace("auth: {token: t0ken}}", "auth: {token: t0ken}, concurrency: 0}")
    assert one(tmp_path, zero).startswith("vendors.perfex.concurrency: ")


def test_an_hmac_source_template_with_an_unknown_name_is_a_config_error(tmp_path):
    # a typo refused every webhook of the source with a 400 at run time
    portal = (
        '  portal: {kind: hmac, secret: s3cret!, id: "{{ paylod.id }}", '
        "type: \"{{ headers['x-event'] }}\"}\n"
    )
    text = BASE.replace("  stripe: {kind: stripe, secret: whsec_x}\n",
                        "  stripe: {kind: stripe, secret: whsec_x}\n" + portal)  # fmt: skip
    assert one(tmp_path, text) == (
        "sources.portal.id: unknown name 'paylod' (a source sees payload and headers)"
    )
    fixed = text.replace("paylod", "payload")
    assert "portal" in load_config(write(tmp_path, fixed), {}).sources  # headers is known


_LAUGHS = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n"
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True)
)
_IF_NOSUCH = "{% if payload.c %}{{ payload.c | nosuch }}{% endif %}"
_HMAC = "  portal: {kind: hmac, secret: s, id: %s, type: '{{ payload.t }}'}\n"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        # each was a traceback from `config check` (and from every reload, every 2 s)
        (BASE.replace("tok3n}", "tok3n}\n    rate_limit: '" + "9" * 400 + "/s'"), "too large"),
        (BASE.replace("whsec_x}", "whsec_x, tolerance: " + "9" * 5000 + "}"), "4300 digits"),
        (BASE + "x: &x [*x]\n", "a YAML alias refers to the anchor it is inside"),
        ("a: " + "[" * 4000 + "]" * 4000 + "\n", "nested too deeply"),
        (BASE.replace("whsec_x}", "whsec_x, public_url: 'http://[::1'}").replace(
            "kind: stripe", "kind: hubspot"), "public_url: not a URL"),
        (BASE.replace("sources:\n", "sources:\n" + _HMAC % "'{{ payload.id | nosuch }}'"),
         "No filter named 'nosuch'"),
        # hung: 366 bytes of "billion laughs" expanded without end
        ("a: &a [x, x, x, x, x, x, x, x, x]\n" + _LAUGHS + BASE, "more than 100,000 values"),
        # loaded, then failed on every event (a 400 blaming the sender; a mapping error)
        (BASE.replace("sources:\n", "sources:\n" + _HMAC % "\"{% include 'x' %}\""),
         "cannot extend, include or import"),
        (BASE.replace("{bill_status: O}", "{bill_status: '" + _IF_NOSUCH + "'}"),
         "no filter named 'nosuch'"),
        (BASE.replace("whsec_x}", "whsec_x, tolerance: 1.5}"), "tolerance: Not a valid integer"),
        (BASE.replace("  stripe: {", "  123: {"), "sources: 123 is not a name"),
    ],
    ids=["rate", "big-int", "self-alias", "deep", "url", "hmac-filter", "laughs",
         "hmac-include", "filter-in-if", "fraction", "int-key"],
)  # fmt: skip
def test_a_config_that_cannot_be_used_is_named_not_a_traceback_or_a_hang(tmp_path, text, says):
    found = problems(tmp_path, text)
    assert any(says in p for p in found), found
