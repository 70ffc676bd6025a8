"""A rule that fails on a real event never costs the event: an ``if`` test or a template
that raises (a type error, a filter on the wrong type) is answered 202 and queues a
``mapping_error`` task per action, for ops to fix and replay; a test on a key the event
lacks is false. Never a 500 (the sender would retry, then give up on us)."""

from __future__ import annotations

import json

import pytest

from config.loader import load_config
from tests.helpers import TEST_CONFIG, hmac_headers, make_settings
from worker.queue import Queue

RULES = """
  - name: big-amounts
    source: portal
    events: [payment.received]
    if: "payload.amount > 1000"
    actions:
      - vendor: perfex
        op: update_customer
        target: "{{ payload.customer }}"
        fields: {vat: "big"}
      - vendor: perfex
        op: update_customer
        target: "{{ payload.customer }}"
        fields: {company: "big spender"}
  - name: sorted-notes
    source: portal
    events: [notes.changed]
    actions:
      - vendor: perfex
        op: update_customer
        target: "{{ payload.customer }}"
        fields: {vat: "{{ payload.notes | dictsort | length }}"}
  - name: unless-skipped
    source: portal
    events: [account.changed]
    if: "not payload.skip_sync and (payload.tier == 'gold' if payload.tier_check else true)"
    actions:
      - vendor: perfex
        op: update_customer
        target: "{{ payload.customer }}"
        fields: {vat: "synced"}
  - name: cross-lines
    source: portal
    events: [lines.changed]
    actions:
      - vendor: perfex
        op: update_customer
        target: "{{ payload.customer }}"
        fields:
          vat: >-
            {% for a in payload.lines %}{% for b in payload.lines %}
            {% for c in payload.lines %}{% endfor %}{% endfor %}{% endfor %}x
"""


@pytest.fixture
def portal(tmp_path, redis_server, private_db, monkeypatch):
    from webhooks import create_app

    monkeypatch.setenv("SANDBOX_URL", "http://127.0.0.1:9")  # nothing is delivered here
    config = tmp_path / "switchboard.yaml"
    config.write_text(TEST_CONFIG.read_text() + RULES)
    settings = make_settings(redis_server.url.rsplit("/", 1)[0] + "/7")
    client = create_app(settings, load_config(config)).test_client()

    def post(event_id: str, event: str, **payload: object):
        body = json.dumps({"event_id": event_id, "event": event, "at": 1.7e9, **payload})
        return client.post("/webhooks/portal", data=body, headers=hmac_headers(body.encode()))

    return post


def _tasks(private_db, event_id: str) -> list:
    queue = Queue(private_db)
    loaded = queue.load_event("portal", event_id)
    assert loaded is not None
    return [queue.load_task(task_id).task for task_id in loaded[1]]


@pytest.mark.parametrize("amount", [None, "abc", [1, 2]])
def test_an_if_test_that_raises_queues_a_mapping_error_per_action(portal, private_db, amount):
    response = portal("evt-if", "payment.received", amount=amount, customer="7")
    assert response.status_code == 202, response.get_json()
    tasks = _tasks(private_db, "evt-if")
    assert [t.action for t in tasks] == [0, 1]
    for task in tasks:
        assert task.mapping_error.startswith("if: TypeError")


def test_an_if_test_on_a_key_the_event_lacks_is_false(portal, private_db):
    response = portal("evt-no-amount", "payment.received", customer="7")
    assert (response.status_code, response.get_json()["status"]) == (200, "ignored")
    assert _tasks(private_db, "evt-no-amount") == []


def test_a_missing_key_is_false_so_not_it_is_true(portal, private_db):
    # as in Jinja, and as in field templates: `not payload.skip_sync` holds without it
    sent = portal("evt-no-skip", "account.changed", customer="7")
    assert (sent.status_code, sent.get_json()["tasks"]) == (202, 1), sent.get_json()
    skipped = portal("evt-skip", "account.changed", customer="7", skip_sync=True)
    assert skipped.get_json()["status"] == "ignored"
    compared = portal("evt-tier", "account.changed", customer="7", tier_check=True)
    assert compared.get_json()["status"] == "ignored"  # payload.tier == 'gold' is false


def test_an_if_test_that_holds_renders_the_actions(portal, private_db):
    assert portal("evt-big", "payment.received", amount=5000, customer="7").status_code == 202
    assert [t.fields for t in _tasks(private_db, "evt-big")] == [
        {"vat": "big"},
        {"company": "big spender"},
    ]


def test_a_template_raising_any_error_is_a_mapping_error(portal, private_db):
    response = portal("evt-notes", "notes.changed", notes=42, customer="7")
    assert response.status_code == 202, response.get_json()
    [task] = _tasks(private_db, "evt-notes")
    # named: which field, then the error ("fields.vat: AttributeError: ...")
    assert task.mapping_error and task.mapping_error.startswith("fields.vat: ")
    assert task.mapping_error.split(": ")[1].endswith("Error")


def test_templates_that_run_too_long_are_a_mapping_error_not_a_hung_thread(portal, private_db):
    # 1,000 lines cubed: a billion turns of a web thread while the sender waits
    response = portal("evt-lines", "lines.changed", lines=list(range(1000)), customer="7")
    assert response.status_code == 202, response.get_json()
    [task] = _tasks(private_db, "evt-lines")
    assert task.mapping_error.startswith("fields.vat: SecurityError: ")
    assert "longer than 1 s" in task.mapping_error
