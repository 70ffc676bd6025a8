"""Helpers for the ops tests: real dead letters through the pipeline, or many at once."""

from __future__ import annotations

import json
import time

from tests.helpers import stripe_headers, wait_for, with_changes
from worker.deadletter import DeadLetters
from worker.model import UpdateTask
from worker.queue import Queue

OPS = {"Authorization": "Bearer test-ops-token"}


def post_stripe(client, body: bytes):
    return client.post("/webhooks/stripe", data=body, headers=stripe_headers(body))


def payment(event_id: str, customer: str = "7") -> bytes:
    data = json.loads(with_changes("stripe/payment_intent.succeeded.json", id=event_id))
    data["data"]["object"]["metadata"]["perfex_customer"] = customer
    return json.dumps(data).encode()


def task_ids(redis, event_id: str, source: str = "stripe") -> list[str]:
    loaded = Queue(redis).load_event(source, event_id)
    assert loaded is not None
    return loaded[1]


def dead_letter_via_pipeline(client, redis, event_id: str, customer: str = "7") -> str:
    """Post a payment whose task dies (the caller set the simulator up to fail); its id."""
    assert post_stripe(client, payment(event_id, customer)).status_code == 202
    [task_id] = task_ids(redis, event_id)
    wait_for(lambda: redis.exists(f"sb:dl:{task_id}") and _state(redis, task_id) == "dead")
    return task_id


def _state(redis, task_id: str) -> str | None:
    record = Queue(redis).load_task(task_id)
    return record.state if record else None


def state(redis, task_id: str) -> str | None:
    return _state(redis, task_id)


def synthetic_dead_letter(
    redis,
    n: int,
    died_at: float,
    vendor: str = "perfex",
    code: str = "not_found",
    rule: str = "payment-activates-crm",
) -> str:
    """A dead letter written through the store's own ``put`` (for paging many entries)."""
    task = UpdateTask(
        "stripe",
        f"evt_many_{n}",
        "payment_intent.succeeded",
        rule,
        0,
        vendor,
        "update_customer",
        str(1000 + n),
        {"active": True},
        died_at,
    )
    attempt = {"at": died_at, "outcome": code, "status": 404, "code": code, "final": True}
    DeadLetters(redis).put(task, code, "Customer not found", [attempt], now=died_at)
    return task.id


def now() -> float:
    return time.time()
