"""What a dead worker held is due again (worker.holdings), and only what it still holds.

Real Redis (database 7, which no worker reads) and the real claim and begin scripts; the
whole story with a SIGKILLed Celery worker is in test_delivery.py.
"""

from __future__ import annotations

import json
import time
import weakref
from types import SimpleNamespace

import pytest
from celery.worker import state as celery_state

from worker import keys
from worker.holdings import REWRITE_EVERY, HoldingsWriter, Recoverer, held_deliveries
from worker.model import Event, UpdateTask
from worker.queue import Queue
from worker.relay import _CLAIM, claim_due
from worker.steps import Steps


def _stored(queue: Queue, i: int) -> UpdateTask:
    now = time.time()
    task = UpdateTask(
        "stripe", f"evt_held_{i}_{now}", "payment_intent.succeeded", "payment-activates-crm",
        0, "perfex", "update_customer", str(300 + i), {"vat": f"held {i}"}, now,
    )  # fmt: skip
    event = Event("stripe", task.event_id, task.event_type, now, now, {}, {})
    assert queue.store_event(event, [task], now=now - 1)
    return task


def _due(client, task: UpdateTask) -> float:
    return client.zscore(keys.DUE, task.id)


@pytest.fixture
def claimed(private_db):
    """Five tasks claimed by a relay (leased for an hour), then taken different ways."""
    queue = Queue(private_db)
    tasks = [_stored(queue, i) for i in range(5)]
    found = claim_due(private_db.register_script(_CLAIM), queue_lease=3600)
    assert [d[0] for d in found.deliveries] == [t.id for t in tasks]
    waiting, finished, running, deferred, regenned = tasks
    private_db.hset(keys.task(finished.id), "state", "applied")
    begun = Steps(private_db).begin(
        running.id, 1, "perfex", running.target, ["vat"], time.time() + 120, "tok", 120
    )
    assert begun.status == "ok"
    record = queue.load_task(deferred.id)
    assert record is not None
    queue.defer(record, time.time() + 30)
    private_db.hset(keys.task(regenned.id), "gen", 2)  # replayed meanwhile: a newer delivery
    private_db.set(keys.held("w1@host"), json.dumps([[t.id, 1] for t in tasks]))
    return SimpleNamespace(tasks=tasks, waiting=waiting, running=running, deferred=deferred)


def test_a_dead_workers_leased_deliveries_are_due_now_and_nothing_else(private_db, claimed):
    before = {t.id: _due(private_db, t) for t in claimed.tasks}
    now = time.time()
    private_db.hset(keys.HEARTBEATS, "w1@host", now - 60)

    found = Recoverer(private_db).recover_dead({"w1@host": now - 60}, now, dead_after=30)

    assert found == {"w1@host": 1}
    assert _due(private_db, claimed.waiting) <= time.time()  # due again, at once
    for task in claimed.tasks[1:]:  # finished, running, deferred, another gen: untouched
        assert _due(private_db, task) == before[task.id]
    assert not private_db.exists(keys.held("w1@host"))  # recovered once
    assert private_db.hget(keys.RECOVERED, "w1@host") == b"1"
    assert private_db.lrange(keys.WAKE, 0, -1) == [b"1"]  # the relays wake for it
    assert Recoverer(private_db).recover_dead({"w1@host": now - 60}, now, 30) == {}


def test_metrics_count_the_recovered_deliveries_by_worker(private_db, private_client):
    private_db.hincrby(keys.RECOVERED, "w1@host", 7)
    text = private_client.get("/metrics").get_data(as_text=True)
    assert 'switchboard_deliveries_recovered_total{worker="w1@host"} 7.0' in text


def test_a_live_worker_is_left_alone_even_if_a_relay_read_an_old_beat(private_db, claimed):
    now = time.time()
    private_db.hset(keys.HEARTBEATS, "w1@host", now)  # it beat after the relay looked
    found = Recoverer(private_db).recover_dead({"w1@host": now - 60}, now, dead_after=30)
    assert found == {}
    assert _due(private_db, claimed.waiting) > now + 3000
    assert private_db.exists(keys.held("w1@host"))


def test_workers_silent_for_a_day_are_forgotten(private_db):
    now = time.time()
    beats = {"old@host": now - 90000, "dead@host": now - 60, "live@host": now}
    private_db.hset(keys.HEARTBEATS, mapping=beats)
    private_db.hset(keys.RECOVERED, mapping={"old@host": 3, "dead@host": 2})
    Recoverer(private_db).recover_dead(beats, now, dead_after=30)
    assert set(private_db.hkeys(keys.HEARTBEATS)) == {b"dead@host", b"live@host"}
    # its recovered-deliveries count (a metric label) goes with it
    assert set(private_db.hkeys(keys.RECOVERED)) == {b"dead@host"}


def test_a_worker_recovers_what_its_own_previous_run_held(private_db, claimed):
    """Same name, new process: the old one is gone whatever its last beat says."""
    private_db.hset(keys.HEARTBEATS, "w1@host", time.time())
    assert Recoverer(private_db).recover(["w1@host"], dead_before=None) == {"w1@host": 1}
    assert _due(private_db, claimed.waiting) <= time.time()


class _Request:
    """The two attributes of a Celery request that holdings read."""

    def __init__(self, name: str, args: list) -> None:
        self.name, self.args = name, args


@pytest.fixture
def reserved():
    """Requests in Celery's own reserved set (as the consumer adds them), removed after."""
    held: list[_Request] = []

    def add(name: str, args: list) -> None:
        held.append(_Request(name, args))
        celery_state.reserved_requests.add(held[-1])

    yield add
    for request in held:
        celery_state.reserved_requests.discard(request)


def test_holdings_are_the_deliveries_of_every_reserved_message(private_db, reserved):
    reserved("switchboard.apply_updates", [[["t2", 3], ["t1", 1]]])
    reserved("switchboard.apply_update", ["t3", 2])
    reserved("celery.ping", [])  # not ours
    assert held_deliveries() == [("t1", 1), ("t2", 3), ("t3", 2)]

    writer = HoldingsWriter("w9@host", private_db)
    writer.write_if_changed()
    assert json.loads(private_db.get(keys.held("w9@host"))) == [["t1", 1], ["t2", 3], ["t3", 2]]
    assert float(private_db.hget(keys.HEARTBEATS, "w9@host")) > time.time() - 5
    private_db.delete(keys.held("w9@host"))  # taken by a recovery: it looked dead
    writer.write_if_changed()  # unchanged, and just written: not written again yet
    assert not private_db.exists(keys.held("w9@host"))
    writer._written_at -= REWRITE_EVERY  # a few seconds on: written again all the same
    writer.write_if_changed()
    assert json.loads(private_db.get(keys.held("w9@host"))) == [["t1", 1], ["t2", 3], ["t3", 2]]


def test_reserved_requests_is_still_a_weak_set():
    """held_deliveries copies Celery's set; if Celery changes its type, look again."""
    assert isinstance(celery_state.reserved_requests, weakref.WeakSet)


def test_a_snapshot_that_cannot_be_taken_leaves_the_last_one_standing(private_db, monkeypatch):
    """Celery's set changing under every copy: nothing is written (an empty list would
    tell the relays this worker held nothing)."""
    writer = HoldingsWriter("w8@host", private_db)
    private_db.set(keys.held("w8@host"), '[["t1",1]]')

    class Changing:
        def __iter__(self):
            raise RuntimeError("Set changed size during iteration")

    monkeypatch.setattr(celery_state, "reserved_requests", Changing())
    assert held_deliveries() is None
    writer.write_if_changed()
    assert private_db.get(keys.held("w8@host")) == b'[["t1",1]]'


def test_a_message_just_received_is_held_before_celery_reserves_it(private_db, monkeypatch):
    """Celery sends task_received before it adds the request to its reserved set: the
    deliveries count as held from the signal on (and wake the writer), so a kill right
    after taking a message does not leave them to the hour-long lease."""
    from celery import signals

    from worker import holdings

    monkeypatch.setattr(holdings, "RECEIVED", holdings.Received())
    holdings.RECEIVED.wake.clear()
    request = _Request("switchboard.apply_updates", [[["t7", 2], ["t8", 1]]])
    signals.task_received.send(sender=None, request=request)
    assert holdings.RECEIVED.wake.is_set()
    assert held_deliveries() == [("t7", 2), ("t8", 1)]  # not in the reserved set yet
    writer = HoldingsWriter("w7@host", private_db)
    writer.write_if_changed()
    assert json.loads(private_db.get(keys.held("w7@host"))) == [["t7", 2], ["t8", 1]]

    monkeypatch.setattr(holdings.Received, "RECENT", 0.0)  # lapsed: the reserved set rules
    assert held_deliveries() == []
    signals.task_received.send(sender=None, request=_Request("celery.ping", []))
    assert held_deliveries() == []  # not ours
