"""What expires and when: an unfinished task never does, a finished one
``SWITCHBOARD_EVENT_TTL_DAYS`` after it ended, an event that long after its last task
ended (never while one is unfinished), and the queue forgets a task whose record is gone.

Before, a task record expired a week after it was stored, finished or not: a task whose
vendor stayed down (deferred by its circuit, which spends no attempt) or a backlog older
than a week vanished silently, and stayed in ``sb:waiting`` for good.
"""

from __future__ import annotations

from tests.helpers import deliver, store_perfex_task
from worker import keys
from worker.queue import Queue
from worker.relay import _CLAIM, claim_due

WEEK = 7 * 86400  # the test settings' event ttl (the default)


def test_a_task_record_expires_only_after_the_task_ends(runtime, private_db, sandbox):
    queue = Queue(private_db)
    task = store_perfex_task(queue, "evt_keep", "evt_keep")
    assert private_db.ttl(keys.task(task.id)) == -1  # unfinished: no expiry
    assert private_db.ttl(keys.event("stripe", "evt_keep")) == -1  # nor its event

    assert deliver(runtime, queue, task) == "applied"
    assert WEEK - 60 < private_db.ttl(keys.task(task.id)) <= WEEK
    # the event's ttl (its de-duplication window) runs from its last task's end
    assert WEEK - 60 < private_db.ttl(keys.event("stripe", "evt_keep")) <= WEEK


def _two_task_event(queue: Queue, event_id: str) -> list:
    """Store a Stripe event with two PerfexCRM updates (customers 7 and 8); its tasks."""
    from worker.model import Event, UpdateTask

    at = 1_700_000_000.0
    tasks = [
        UpdateTask("stripe", event_id, "t", "r", n, "perfex", "update_customer", str(7 + n),
                   {"vat": f"v{n}"}, at)
        for n in range(2)
    ]  # fmt: skip
    assert queue.store_event(Event("stripe", event_id, "t", at, at, {}, {}), tasks)
    return tasks


def test_an_event_is_kept_until_its_last_task_ends(runtime, private_db, sandbox):
    """A task still retrying when the ttl runs out must not lose its event: the ops view
    of the event (its only per-task view), an event replay and de-duplication need it."""
    queue = Queue(private_db)
    tasks = _two_task_event(queue, "evt_two")
    event_key = keys.event("stripe", "evt_two")
    assert deliver(runtime, queue, tasks[0]) == "applied"
    assert private_db.ttl(event_key) == -1  # one task still open
    sandbox.knobs("perfexcrm", fail_next=1, fail_status=400)
    assert deliver(runtime, queue, tasks[1]) == "dead"
    assert WEEK - 60 < private_db.ttl(event_key) <= WEEK  # both ended
    assert runtime.dead_letters.replay(tasks[1].id, who="test") is True
    assert private_db.ttl(event_key) == -1  # open again
    assert deliver(runtime, queue, tasks[1]) == "applied"
    assert WEEK - 60 < private_db.ttl(event_key) <= WEEK


def test_an_event_stored_before_events_were_held_is_held_once_a_task_is_replayed(
    runtime, private_db, sandbox
):
    """Upgrade: an event written by the old code (ttl from arrival, no hold) whose task is
    replayed must be kept until that task ends, even if its other task ends meanwhile."""
    queue = Queue(private_db)
    tasks = _two_task_event(queue, "evt_old")
    event_key = keys.event("stripe", "evt_old")
    private_db.hdel(event_key, "open")  # as the old code left it: no count of open
    private_db.expire(event_key, WEEK)  # tasks (an earlier form of the hold), a ttl
    sandbox.knobs("perfexcrm", fail_next=1, fail_status=400)
    assert deliver(runtime, queue, tasks[0]) == "dead"
    assert runtime.dead_letters.replay(tasks[0].id, who="test") is True
    assert deliver(runtime, queue, tasks[1]) == "applied"  # the other one ends
    assert private_db.ttl(event_key) == -1  # the replayed task is still queued: kept


def test_an_event_that_made_no_task_expires_from_its_arrival(private_db):
    from worker.model import Event

    queue = Queue(private_db)
    assert queue.store_event(Event("stripe", "evt_none", "t", 1.0, 1.0, {}, {}), [])
    assert WEEK - 60 < private_db.ttl(keys.event("stripe", "evt_none")) <= WEEK


def test_a_dead_task_expires_and_a_replayed_one_waits_again_without_expiry(
    runtime, private_db, sandbox
):
    queue = Queue(private_db)
    task = store_perfex_task(queue, "evt_dies", "evt_dies")
    sandbox.knobs("perfexcrm", fail_next=1, fail_status=400)
    assert deliver(runtime, queue, task) == "dead"
    assert WEEK - 60 < private_db.ttl(keys.task(task.id)) <= WEEK

    assert runtime.dead_letters.replay(task.id, who="test") is True
    assert private_db.ttl(keys.task(task.id)) == -1  # unfinished again
    assert deliver(runtime, queue, task) == "applied"
    assert WEEK - 60 < private_db.ttl(keys.task(task.id)) <= WEEK


def test_the_relay_forgets_a_task_whose_record_is_gone(private_db):
    queue = Queue(private_db)
    gone, kept = (
        store_perfex_task(queue, "evt_gone", "evt_gone"),
        store_perfex_task(queue, "evt_kept", "evt_kept"),
    )
    private_db.delete(keys.task(gone.id))  # as a record from before this change expires

    claimed = claim_due(private_db.register_script(_CLAIM), queue_lease=3600)

    assert [task_id for task_id, _ in claimed.deliveries] == [kept.id]
    assert private_db.zscore(keys.WAITING, gone.id) is None
    assert private_db.zscore(keys.DUE, gone.id) is None
    assert private_db.zscore(keys.WAITING, kept.id) is not None
