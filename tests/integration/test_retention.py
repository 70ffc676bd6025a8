"""What expires and when: an unfinished task never does, a finished one
``SWITCHBOARD_EVENT_TTL_DAYS`` after it ended, and the queue forgets a task whose record
is gone.

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
    assert 0 < private_db.ttl(keys.event("stripe", "evt_keep")) <= WEEK  # dedup window

    assert deliver(runtime, queue, task) == "applied"
    assert WEEK - 60 < private_db.ttl(keys.task(task.id)) <= WEEK


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
