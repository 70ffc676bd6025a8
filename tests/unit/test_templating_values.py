"""What a template gives is JSON data a vendor can take, of the type it reads as."""

from __future__ import annotations

import json

import pytest
from marshmallow import ValidationError

from webhooks.rules import RuleSet
from webhooks.templating import TemplateError, compile_value, render_value
from worker.model import Event

SCOPE = {
    "payload": {
        "name": "Jenny",
        "phone": None,
        "ids": ["3", "4"],
        "items": {"data": [{"nickname": "gold"}]},  # Stripe subscriptions carry "items"
        "form": {"answer": "call me"},
        "meta": {"plan": "gold"},
    }
}


def render(text: str):
    return render_value(compile_value(text), SCOPE)


@pytest.mark.parametrize(
    ("template", "value"),
    [
        ("{{ 4900 / 100 }}", 49.0),  # a lone constant kept its type: was "49.0"
        ("{{ none }}", None),  # was "None"
        ("{{ false }}", False),  # was "False"
        ("{{ [1, 2] }}", [1, 2]),  # was "[1, 2]": groups_in refused it on every event
        ("{{ payload.ids | map('int') }}", [3, 4]),  # was "<generator object ...>"
        ("{{ payload.ids | select | list }}", ["3", "4"]),
        ("Paid by {{ payload.name }} ({{ payload.phone }})", "Paid by Jenny ()"),  # not (None)
        ("{% if payload.phone %}{{ payload.phone }}{% endif %}", ""),  # on its own: ""
        ("{{ payload.items.data[0].nickname }}", "gold"),  # was the dict method "items"
        ("{{ payload.meta.items() | list }}", [["plan", "gold"]]),  # methods still work
    ],
)
def test_a_template_gives_data_of_the_type_it_reads_as(template, value):
    assert render(template) == value
    json.dumps(render(template), allow_nan=False)  # and a vendor can be sent it


def test_a_missing_key_is_false_as_a_test_and_an_error_as_a_value():
    # the README's {% if payload.company %} on an event without one: it was a
    # mapping_error (strict undefined failed the test), and the whole task a dead letter
    fields = {
        "company": "{% if payload.company %}{{ payload.company }}{% endif %}",
        "vat": "{{ payload.vat if payload.vat else 'none' }}",
        "name": "{{ payload.name }}",
    }
    assert render_value(compile_value(fields), SCOPE) == {"vat": "none", "name": "Jenny"}
    with pytest.raises(TemplateError, match="company"):  # used as a value: named, not ""
        render("{{ payload.company }}")
    with pytest.raises(TemplateError, match="company"):
        render("Dear {{ payload.company }}")


def test_a_field_whose_template_writes_nothing_is_left_out_not_blanked():
    # None failed the task as invalid_fields; "" would blank the vendor's company
    fields = {
        "company": "{% if payload.phone %}{{ payload.phone }}{% endif %}",
        "name": "{{ payload.name }}",
        "tags": ["{% if payload.phone %}x{% endif %}", "kept"],
    }
    assert render_value(compile_value(fields), SCOPE) == {"name": "Jenny", "tags": ["kept"]}


@pytest.mark.parametrize("template", ["{{ payload.form.values }}", "{{ payload.name.upper }}"])
def test_something_that_is_not_data_is_an_error_not_its_repr(template):
    # was sent to the vendor as "<built-in method values of dict object at 0x...>"
    with pytest.raises(TypeError):
        render(template)


def test_such_a_rule_makes_a_mapping_error_dead_letter(tmp_path):
    from config.loader import load_config
    from tests.unit.test_config import BASE, write

    text = BASE.replace("{bill_status: O}", '{bill_status: "{{ payload.values }}"}')
    rules = RuleSet(load_config(write(tmp_path, text), {}))
    event = Event("stripe", "evt_1", "invoice.paid", 1.0, 1.0, {"id": "1001"}, {})
    [task] = rules.tasks_for(event)
    assert task.mapping_error and "not data" in task.mapping_error


def test_numbers_are_written_as_text_and_digit_ids_are_taken_where_a_vendor_wants_them():
    # zip: 12345 and vat: "{{ amount / 100 }}" were refused as "Not a valid string";
    # Soliditech's price_list_id refused "3", the only way Stripe metadata carries it
    from worker.vendors.perfexcrm import UpdateCustomer as PerfexUpdate
    from worker.vendors.soliditech import UpdateCustomer as SoliUpdate

    assert PerfexUpdate().load({"zip": 12345, "vat": 49.0}) == {"zip": "12345", "vat": "49.0"}
    assert SoliUpdate().load({"price_list_id": "3"})["price_list_id"] == 3
    with pytest.raises(ValidationError):
        PerfexUpdate().load({"zip": True})


@pytest.mark.parametrize("template", ["{{ '-' * payload.n }}", "{{ 10 ** payload.n }}"])
def test_a_sender_cannot_make_a_template_take_the_threads_memory_or_time(template):
    # '-' * 3e8 made a 300 MB value in the web thread; 10 ** n with a big n never ends
    from jinja2.exceptions import SecurityError

    with pytest.raises(SecurityError):
        render_value(compile_value(template), {"payload": {"n": 300_000_000}})
    assert render_value(compile_value("{{ 'ab' * 3 }}{{ 2 ** 10 }}"), {}) == "ababab1024"


@pytest.mark.parametrize(
    "template",
    [
        "{{ '%0*d' % (payload.n, 1) }}",
        "{{ 'x'.center(payload.n) }}",
        "{{ '{:>{}}'.format('x', payload.n) }}",
        "{{ payload.big ** 400 }}",
    ],
)
def test_widths_and_powers_a_sender_sets_are_bounded(template):
    from jinja2.exceptions import SecurityError

    scope = {"payload": {"n": 10_000_000, "big": 10**600}}
    with pytest.raises(SecurityError):
        render_value(compile_value(template), scope)


@pytest.mark.parametrize(
    "template",
    [
        # nested loops over a sender's list: 600 ** 3 turns, minutes of a web thread
        "{% for a in payload.l %}{% for b in payload.l %}{% for c in payload.l %}"
        "{% endfor %}{% endfor %}{% endfor %}x",
        # a macro calling itself twice: 2 ** 60 calls and no loop at all
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% else %}x{% endif %}"
        "{% endmacro %}{{ f(60) | length }}",
    ],
)
def test_a_template_that_runs_past_the_time_limit_stops(template):
    from jinja2.exceptions import SecurityError

    with pytest.raises(SecurityError, match="longer than"):
        render_value(compile_value(template), {"payload": {"l": list(range(600))}})


def test_a_filter_or_test_looping_over_a_senders_list_stops_at_the_time_limit():
    # select('in', ...) over two 20,000-item lists: 400 million comparisons, no loop tag
    from jinja2.exceptions import SecurityError

    scope = {"payload": {"tags": list(range(20_000)), "allowed": list(range(-20_000, 0))}}
    for template in (
        "{{ payload.tags | select('in', payload.allowed) | list }}",
        "{{ payload.tags | map('abs') | select('in', payload.allowed) | list }}",
    ):
        with pytest.raises(SecurityError, match="longer than"):
            render_value(compile_value(template), scope)


def test_a_deadline_set_outside_holds_for_every_render_inside():
    # ingest sets one for a whole request: a HubSpot batch of 500 events got 500 s
    from jinja2.exceptions import SecurityError

    from webhooks.templating import time_limit

    looping = compile_value("{% for x in payload.l %}{{ x }}{% endfor %}")
    with time_limit(0.0), pytest.raises(SecurityError):
        render_value(looping, {"payload": {"l": [1, 2]}})
    assert render_value(looping, {"payload": {"l": [1, 2]}}) == "12"  # its own, outside


def test_loops_give_what_they_gave_before_the_clock_watched_them():
    scope = {"payload": {"l": [1, 2, 3], "d": {"a": 1}, "tree": [[1], 3]}}
    templates = {
        "{% for x in payload.l %}{{ x }}{% if loop.last %}!{% endif %}{% endfor %}": "123!",
        "{% for k, v in payload.d.items() %}{{ k }}={{ v }}{% else %}-{% endfor %}": "a=1",
        "{% for x in payload.missing_ok | default([]) %}x{% else %}none{% endfor %}": "none",
        "{% for x in payload.l if x > 1 %}{{ loop.index }}/{{ loop.length }}{% endfor %}": "1/22/2",
        "{% for x in payload.tree recursive %}{% if x is number %}{{ x }}{% endif %}"
        "{% endfor %}": 3,
    }
    for template, value in templates.items():
        assert render_value(compile_value(template), scope) == value, template


def test_text_and_containers_hold_data_only():
    # mixed text wrote "<generator object ...>"; a huge integer made ingest answer 500
    with pytest.raises(TypeError):
        render("ids: {{ payload.ids | map('int') }}")
    with pytest.raises(TypeError):
        render("{{ payload.n * 10 ** 30 }}".replace("payload.n", "7"))
    with pytest.raises(TemplateError) as caught:
        render("{{ [payload.missing] }}")  # the missing key is named, not "StrictUndefined"
    assert "missing" in str(caught.value)
    assert render("{{ '%05d' % 42 }} {{ 'ab'.center(6) }}") == "00042   ab  "
