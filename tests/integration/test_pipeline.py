"""End to end through real parts: Flask ingest -> Redis -> Celery worker process -> simulator."""

from __future__ import annotations

import json
import time

from tests.helpers import deliver, stripe_headers, wait_for, with_changes
from worker import keys
from worker.model import Event, UpdateTask
from worker.queue import Queue
from worker.vendors.base import RetryPolicy


def post_stripe(client, body: bytes, **kw):
    return client.post("/webhooks/stripe", data=body, headers=stripe_headers(body, **kw))


def task_states(redis, source: str, event_id: str) -> list[str]:
    loaded = Queue(redis).load_event(source, event_id)
    assert loaded is not None
    _, task_ids = loaded
    return [Queue(redis).load_task(t).state for t in task_ids]  # type: ignore[union-attr]


def test_payment_intent_succeeded_updates_the_perfex_customer(client, worker, sandbox, redis):
    body = with_changes("stripe/payment_intent.succeeded.json", id="evt_e2e_payment")
    assert sandbox.record("perfexcrm", 7)["vat"] == ""
    response = post_stripe(client, body)
    assert response.status_code == 202
    assert response.get_json() == {
        "status": "accepted",
        "event_ids": ["evt_e2e_payment"],
        "tasks": 1,
    }
    wait_for(lambda: sandbox.record("perfexcrm", 7)["vat"] == "paid 49.0")
    assert sandbox.record("perfexcrm", 7)["active"] == "1"
    wait_for(lambda: task_states(redis, "stripe", "evt_e2e_payment") == ["applied"])


def test_duplicate_delivery_queues_nothing_again(client, worker, sandbox, redis):
    body = with_changes("stripe/payment_intent.succeeded.json", id="evt_e2e_dup")
    assert post_stripe(client, body).status_code == 202
    second = post_stripe(client, body)
    assert second.status_code == 200
    assert second.get_json()["status"] == "duplicate"
    wait_for(lambda: task_states(redis, "stripe", "evt_e2e_dup") == ["applied"])
    time.sleep(0.3)
    puts = [e for e in sandbox.log("perfexcrm") if e["method"] == "PUT"]
    assert len(puts) == 1


def test_unmatched_event_is_stored_and_ignored(client, redis):
    body = with_changes("stripe/charge.succeeded.json", id="evt_e2e_ignored")
    response = post_stripe(client, body)
    assert response.status_code == 200
    assert response.get_json() == {
        "status": "ignored",
        "event_ids": ["evt_e2e_ignored"],
        "tasks": 0,
    }
    assert Queue(redis).load_event("stripe", "evt_e2e_ignored") is not None


def test_5xx_then_success_is_retried_and_applied(client, worker, sandbox, redis):
    sandbox.knobs("perfexcrm", fail_next=2, fail_status=503)
    body = with_changes("stripe/payment_intent.succeeded.json", id="evt_e2e_retry")
    assert post_stripe(client, body).status_code == 202
    wait_for(lambda: task_states(redis, "stripe", "evt_e2e_retry") == ["applied"])
    assert sandbox.record("perfexcrm", 7)["vat"] == "paid 49.0"
    puts = [e for e in sandbox.log("perfexcrm") if e["method"] == "PUT"]
    assert len(puts) == 3  # two injected 503s, then the success
    _, [task_id] = Queue(redis).load_event("stripe", "evt_e2e_retry")  # type: ignore[misc]
    attempts = Queue(redis).load_task(task_id).attempts  # type: ignore[union-attr]
    assert [a["status"] for a in attempts] == [503, 503, 200]


def test_a_408_is_a_timeout_retried_then_applied(client, worker, sandbox, redis):
    sandbox.knobs("perfexcrm", fail_next=1, fail_status=408)
    body = with_changes("stripe/payment_intent.succeeded.json", id="evt_e2e_408")
    assert post_stripe(client, body).status_code == 202
    wait_for(lambda: task_states(redis, "stripe", "evt_e2e_408") == ["applied"])
    attempts = attempts_of(redis, "evt_e2e_408")
    assert [(a["outcome"], a["status"]) for a in attempts] == [("timeout", 408), ("applied", 200)]
    assert sandbox.record("perfexcrm", 7)["vat"] == "paid 49.0"


def test_a_503_retry_after_is_the_floor_of_the_wait(client, worker, sandbox, redis):
    # the test config retries after at most 0.2 s; the vendor asks for 2 s
    sandbox.knobs("perfexcrm", fail_next=1, fail_status=503, fail_retry_after=True, retry_after="2")
    body = with_changes("stripe/payment_intent.succeeded.json", id="evt_e2e_503_later")
    assert post_stripe(client, body).status_code == 202
    wait_for(lambda: task_states(redis, "stripe", "evt_e2e_503_later") == ["applied"])
    attempts = attempts_of(redis, "evt_e2e_503_later")
    assert [a["status"] for a in attempts] == [503, 200]
    first, second = (a["at"] for a in attempts)
    assert second - first >= 1.9  # a lower bound on the scheduled delay, not on our speed


def test_retries_used_up_become_an_exhausted_dead_letter(client, worker, sandbox, redis):
    sandbox.knobs("perfexcrm", fail_next=10, fail_status=500)
    body = with_changes("stripe/payment_intent.succeeded.json", id="evt_e2e_exhausted")
    assert post_stripe(client, body).status_code == 202
    wait_for(lambda: task_states(redis, "stripe", "evt_e2e_exhausted") == ["dead"])
    entry = json.loads(redis.hget(f"sb:dl:{_only_task(redis, 'evt_e2e_exhausted')}", "entry"))
    assert entry["code"] == "exhausted"
    assert len(entry["attempts"]) == 3  # max_attempts in the test config


def test_unknown_customer_becomes_a_not_found_dead_letter(client, worker, sandbox, redis):
    data = json.loads(with_changes("stripe/payment_intent.succeeded.json", id="evt_e2e_404"))
    data["data"]["object"]["metadata"]["perfex_customer"] = "999"
    body = json.dumps(data).encode()
    assert post_stripe(client, body).status_code == 202
    wait_for(lambda: task_states(redis, "stripe", "evt_e2e_404") == ["dead"])
    entry = json.loads(redis.hget(f"sb:dl:{_only_task(redis, 'evt_e2e_404')}", "entry"))
    assert (entry["code"], entry["vendor"], entry["rule"], entry["target"]) == (
        "not_found",
        "perfex",
        "payment-activates-crm",
        "999",
    )
    assert entry["attempts"][-1]["status"] == 404
    assert "Customer not found" in entry["attempts"][-1]["excerpt"]


def test_template_error_becomes_a_mapping_error_dead_letter(client, worker, sandbox, redis):
    data = json.loads(with_changes("stripe/customer.updated.json", id="evt_e2e_mapping"))
    del data["data"]["object"]["address"]  # the rule reads address.line1
    body = json.dumps(data).encode()
    response = post_stripe(client, body)
    assert response.status_code == 202  # still accepted: ops can fix the rule and replay
    wait_for(lambda: task_states(redis, "stripe", "evt_e2e_mapping") == ["dead"])
    entry = json.loads(redis.hget(f"sb:dl:{_only_task(redis, 'evt_e2e_mapping')}", "entry"))
    assert entry["code"] == "mapping_error"
    assert "address" in entry["message"]
    assert sandbox.log("perfexcrm") == []


def test_invalid_rendered_field_is_dead_lettered_without_a_call(app, worker, sandbox, redis):
    from worker.model import Event, UpdateTask

    event = Event("stripe", "evt_e2e_invalid", "manual", time.time(), time.time(), {})
    task = UpdateTask(
        "stripe",
        event.id,
        event.type,
        "manual",
        0,
        "perfex",
        "update_customer",
        "7",
        {"country": "United Kingdom"},
        event.occurred_at,
    )
    assert Queue(redis).store_event(event, [task])
    wait_for(lambda: task_states(redis, "stripe", "evt_e2e_invalid") == ["dead"])
    entry = json.loads(redis.hget(f"sb:dl:{task.id}", "entry"))
    assert entry["code"] == "invalid_fields"
    assert sandbox.log("perfexcrm") == []


def _only_task(redis, event_id: str) -> str:
    _, [task_id] = Queue(redis).load_event("stripe", event_id)  # type: ignore[misc]
    return task_id


def attempts_of(redis, event_id: str) -> list[dict]:
    """The attempts of the one task of a Stripe event."""
    record = Queue(redis).load_task(_only_task(redis, event_id))
    assert record is not None
    return record.attempts


def test_celery_messages_travel_through_our_redis(client, worker, sandbox, redis):
    """The broker is the Redis we configured, never Celery's default AMQP on localhost."""
    body = with_changes("stripe/payment_intent.succeeded.json", id="evt_e2e_broker")
    assert post_stripe(client, body).status_code == 202
    wait_for(lambda: task_states(redis, "stripe", "evt_e2e_broker") == ["applied"])
    assert redis.exists("_kombu.binding.switchboard")


def test_importing_the_celery_app_picks_redis_as_broker(redis_server):
    import subprocess
    import sys

    from tests.helpers import ROOT

    code = (
        "from kombu.transport.redis import Transport; from worker import app;"
        "c = app.connection_for_write();"
        "print(isinstance(c.transport, Transport), c.hostname, c.port)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"REDIS_URL": redis_server.url, "PATH": "/usr/bin:/bin"},
        check=True,
    )
    # kombu's Redis transport (our subclass of it: worker.broker), on the Redis we named
    assert out.stdout.split() == ["True", "127.0.0.1", str(redis_server.port)], out.stderr


def test_a_task_for_a_vendor_not_in_the_config_dies_unknown_vendor(runtime, private_db, sandbox):
    # a task queued before its vendor left the config (or by a web whose config is newer
    # than this worker's, mid-rollout: so it is retried first, with the default policy);
    # delivered in this process (the runtime fixture), on a database no worker reads
    now = time.time()
    event = Event("stripe", "evt_gone_vendor", "manual", now, now, {})
    task = UpdateTask(
        "stripe", event.id, event.type, "manual", 0,
        "perfex_old", "update_customer", "7", {"vat": "x"}, now,
    )  # fmt: skip
    queue = Queue(private_db)
    assert queue.store_event(event, [task])
    outcomes = []
    while not outcomes or outcomes[-1] == "retrying":
        outcomes.append(deliver(runtime, queue, task))
        private_db.zadd(keys.DUE, {task.id: time.time()})  # due now: the next attempt
    assert outcomes == ["retrying"] * (RetryPolicy().max_attempts - 1) + ["dead"]
    assert queue.load_task(task.id).state == "dead"  # type: ignore[union-attr]
    entry = json.loads(private_db.hget(keys.dead(task.id), "entry"))
    assert (entry["code"], entry["vendor"]) == ("unknown_vendor", "perfex_old")
    assert "perfex_old" in entry["message"]
    assert entry["attempts"][-1]["final"] and entry["attempts"][-1]["code"] == "unknown_vendor"
    assert private_db.zscore(keys.DEAD_INDEX, task.id) is not None
    assert sandbox.log("perfexcrm") == []
