"""A replayed dead letter leaves the store however its replay finishes well: applied, or
stale (a newer event already set every field it carries: nothing is left to send).

Deliveries run in this process (:func:`worker.runner.process`, the ``runtime`` fixture)
against the simulator, on a database no worker reads.
"""

from __future__ import annotations

import time

from tests.helpers import deliver, store_perfex_task
from worker import keys
from worker.queue import Queue


def test_a_replay_made_stale_by_a_newer_event_leaves_the_store(runtime, private_db, sandbox):
    queue = Queue(private_db)
    now = time.time()
    old = store_perfex_task(queue, "evt_old", "paid old", now - 60)
    sandbox.knobs("perfexcrm", fail_next=1, fail_status=400)
    assert deliver(runtime, queue, old) == "dead"
    assert runtime.dead_letters.get(old.id)["code"] == "rejected"
    newer = store_perfex_task(queue, "evt_newer", "paid newer", now)
    assert deliver(runtime, queue, newer) == "applied"

    assert runtime.dead_letters.replay(old.id, who="test") is True
    assert deliver(runtime, queue, old) == "stale"

    assert runtime.dead_letters.get(old.id) is None  # was: kept, marked replaying, forever
    assert runtime.dead_letters.count() == 0
    assert sandbox.record("perfexcrm", 7)["vat"] == "paid newer"


def test_a_replay_that_is_applied_leaves_the_store(runtime, private_db, sandbox):
    queue = Queue(private_db)
    task = store_perfex_task(queue, "evt_once", "paid once")
    sandbox.knobs("perfexcrm", fail_next=1, fail_status=400)
    assert deliver(runtime, queue, task) == "dead"
    assert runtime.dead_letters.replay(task.id, who="test") is True
    assert deliver(runtime, queue, task) == "applied"
    assert runtime.dead_letters.get(task.id) is None
    assert sandbox.record("perfexcrm", 7)["vat"] == "paid once"


def test_an_entry_left_over_from_a_task_that_was_applied_is_not_replayed(runtime, private_db):
    """A worker died between writing a dead letter and marking its task dead, and a later
    run applied the task: replaying the leftover entry must not send the task again."""
    from worker.deadletter import DeadLetters

    queue = Queue(private_db)
    task = store_perfex_task(queue, "evt-leftover", "paid 5")
    DeadLetters(private_db).put(task, "not_found", "Customer not found", [])
    private_db.hset(keys.task(task.id), "state", "applied")  # the later run's outcome
    store = DeadLetters(private_db)
    assert store.replay(task.id, who="test") is None
    assert store.get(task.id) is None and store.counts()["vendor"] == {}
    record = queue.load_task(task.id)
    assert record is not None and record.state == "applied"  # not re-opened


def test_an_entry_left_by_a_worker_that_died_before_marking_its_task_is_resolved(
    runtime, private_db, sandbox
):
    """The worker wrote the dead letter and died before marking the task dead; the task's
    lease ran out and a later run applied it. The entry was left in the store (a failure
    on the page that never was) until its task record expired, and replaying it then
    sent the update again."""
    from worker.deadletter import DeadLetters

    queue = Queue(private_db)
    task = store_perfex_task(queue, "evt-died-mid-dead", "paid 6")
    DeadLetters(private_db).put(task, "exhausted", "gave up", [])  # ...and the worker died
    assert deliver(runtime, queue, task) == "applied"  # the run after the lease ran out
    assert runtime.dead_letters.get(task.id) is None
    assert runtime.dead_letters.count() == 0


def test_an_event_replay_that_races_the_events_expiry_stores_it_whole(private_db):
    # the replay branch only appended task ids: an event that expired between the replay's
    # read and its write became a hash of task ids alone, and reading it raised KeyError
    from worker.model import Event, UpdateTask

    queue = Queue(private_db)
    event = Event("stripe", "evt_raced", "payment_intent.succeeded", 1.0, 1.0, {"a": 1}, {})
    task = UpdateTask(
        "stripe", event.id, event.type, "r", 0, "perfex", "update_customer", "7", {"vat": "x"}, 1.0
    )  # fmt: skip
    private_db.delete(keys.event("stripe", "evt_raced"))  # expired just now
    assert queue.store_event(event, [task], replay=True)
    loaded = queue.load_event("stripe", "evt_raced")
    assert loaded is not None and loaded[0].payload == {"a": 1} and loaded[1] == [task.id]
