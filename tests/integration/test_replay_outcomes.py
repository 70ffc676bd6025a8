"""A replayed dead letter leaves the store however its replay finishes well: applied, or
stale (a newer event already set every field it carries: nothing is left to send).

Deliveries run in this process (:func:`worker.runner.process`, the ``runtime`` fixture)
against the simulator, on a database no worker reads.
"""

from __future__ import annotations

import time

from webhooks.sources.base import Event
from worker.model import UpdateTask
from worker.queue import Queue
from worker.runner import process


def _store(queue: Queue, event_id: str, occurred_at: float, vat: str) -> UpdateTask:
    task = UpdateTask(
        "stripe", event_id, "payment_intent.succeeded", "payment-activates-crm",
        0, "perfex", "update_customer", "7", {"vat": vat}, occurred_at,
    )  # fmt: skip
    event = Event("stripe", event_id, task.event_type, occurred_at, occurred_at, {}, {})
    assert queue.store_event(event, [task])
    return task


def _deliver(runtime, queue: Queue, task: UpdateTask) -> str:
    record = queue.load_task(task.id)
    assert record is not None
    return process(runtime, task.id, record.gen)


def test_a_replay_made_stale_by_a_newer_event_leaves_the_store(runtime, private_db, sandbox):
    queue = Queue(private_db)
    now = time.time()
    old = _store(queue, "evt_old", now - 60, "paid old")
    sandbox.knobs("perfexcrm", fail_next=1, fail_status=400)
    assert _deliver(runtime, queue, old) == "dead"
    assert runtime.dead_letters.get(old.id)["code"] == "rejected"
    newer = _store(queue, "evt_newer", now, "paid newer")
    assert _deliver(runtime, queue, newer) == "applied"

    assert runtime.dead_letters.replay(old.id, who="test") is True
    assert _deliver(runtime, queue, old) == "stale"

    assert runtime.dead_letters.get(old.id) is None  # was: kept, marked replaying, forever
    assert runtime.dead_letters.count() == 0
    assert sandbox.record("perfexcrm", 7)["vat"] == "paid newer"


def test_a_replay_that_is_applied_leaves_the_store(runtime, private_db, sandbox):
    queue = Queue(private_db)
    task = _store(queue, "evt_once", time.time(), "paid once")
    sandbox.knobs("perfexcrm", fail_next=1, fail_status=400)
    assert _deliver(runtime, queue, task) == "dead"
    assert runtime.dead_letters.replay(task.id, who="test") is True
    assert _deliver(runtime, queue, task) == "applied"
    assert runtime.dead_letters.get(task.id) is None
    assert sandbox.record("perfexcrm", 7)["vat"] == "paid once"
