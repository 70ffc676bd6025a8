"""The relay: claims due tasks in one script and publishes several deliveries per message.

Real Redis throughout; the last test runs the real worker (its relay and Celery pool)
against the PerfexCRM simulator.
"""

from __future__ import annotations

import contextlib
import time

import pytest
import redis as redis_lib
from kombu.exceptions import OperationalError

from tests.helpers import wait_for
from worker import keys
from worker.model import Event, UpdateTask
from worker.queue import Queue
from worker.relay import _CLAIM, NotPublished, batch_size, claim_due, publish


def _task(i: int, target: str, occurred_at: float, **extra: object) -> UpdateTask:
    return UpdateTask(
        "stripe",
        f"evt_relay_{i}_{time.time()}",
        "payment_intent.succeeded",
        "payment-activates-crm",
        0,
        "perfex",
        "update_customer",
        target,
        {"vat": f"relay {i}"},
        occurred_at,
        **extra,  # type: ignore[arg-type]
    )


def _store(queue: Queue, task: UpdateTask, due: float) -> None:
    event = Event("stripe", task.event_id, task.event_type, task.occurred_at, due, {}, {})
    assert queue.store_event(event, [task], now=due)


def test_batch_size_spreads_a_trickle_and_fills_messages_under_a_backlog():
    assert batch_size(1, consumers=16, largest=20) == 1
    assert batch_size(16, consumers=16, largest=20) == 1  # one each: lowest latency
    assert batch_size(40, consumers=16, largest=20) == 3
    assert batch_size(500, consumers=16, largest=20) == 20  # capped
    assert batch_size(2, consumers=16, largest=20, backlog=5) == 20  # everyone busy
    assert batch_size(0, consumers=0, largest=0) == 1


def test_claim_leases_due_tasks_in_order_and_drops_finished_ones(private_db):
    queue = Queue(private_db)
    now = time.time()
    tasks = [_task(i, str(100 + i), now) for i in range(4)]
    for i, task in enumerate(tasks):
        _store(queue, task, now - 10 + i)  # due, oldest first
    later = _task(9, "109", now)
    _store(queue, later, now + 60)  # not due yet
    private_db.hset(keys.task(tasks[1].id), "state", "applied")  # finished meanwhile
    private_db.delete(keys.task(tasks[2].id))  # expired meanwhile
    private_db.rpush(keys.CELERY_QUEUE, "m1", "m2")  # two messages waiting
    private_db.rpush(keys.WAKE, "1")

    found = claim_due(private_db.register_script(_CLAIM), queue_lease=30)

    assert found.deliveries == [(tasks[0].id, 1), (tasks[3].id, 1)]
    assert found.claimed == 4  # the two finished ones were taken off sb:due too
    assert found.backlog == 2
    assert found.next_due == pytest.approx(now + 30, abs=1)  # the claimed leases
    assert not private_db.exists(keys.WAKE)
    due = dict(private_db.zrange(keys.DUE, 0, -1, withscores=True))
    assert set(due) == {tasks[0].id.encode(), tasks[3].id.encode(), later.id.encode()}
    assert due[tasks[0].id.encode()] == pytest.approx(now + 30, abs=1)
    assert due[later.id.encode()] == pytest.approx(now + 60, abs=0.01)


def _lpush_calls(client: redis_lib.Redis) -> int:
    return int(client.info("commandstats").get("cmdstat_lpush", {}).get("calls", 0))


def test_a_backlog_goes_out_in_fewer_messages_and_every_task_gets_its_outcome(
    worker, sandbox, redis
):
    """24 tasks released at once: all applied (one a mapping error: dead), in < 24 messages.

    The Celery message count is Redis' own LPUSH count (kombu publishes with LPUSH).
    """
    queue = Queue(redis)
    template = sandbox.record("perfexcrm", 7)
    now = time.time()
    hold = now + 3600  # held until released below, so the relay sees them all at once
    tasks = []
    for i in range(24):
        target = str(5000 + i)
        sandbox.http.put(
            f"/perfexcrm/_sim/records/{target}", json={**template, "userid": target}
        ).raise_for_status()
        broken = {"mapping_error": "UndefinedError: no key"} if i == 5 else {}
        tasks.append(_task(i, target, now, **broken))
        _store(queue, tasks[-1], hold + i / 1000)
    before = _lpush_calls(redis)
    redis.zunionstore(keys.DUE, {keys.DUE: 1e-9})  # all due now, order kept
    redis.rpush(keys.WAKE, "1")

    def states() -> list[str]:
        return [(redis.hget(keys.task(t.id), "state") or b"").decode() for t in tasks]

    wait_for(lambda: all(s in ("applied", "dead") for s in states()), timeout=30)
    assert states() == ["dead" if i == 5 else "applied" for i in range(24)]
    assert sandbox.record("perfexcrm", 5000 + 23)["vat"] == "relay 23"
    messages = _lpush_calls(redis) - before
    assert 1 <= messages < 24


class _Broker:
    """Stands in for Celery's publishing: the broker takes ``accept`` messages, then fails
    as kombu does when Redis goes away mid-publish."""

    def __init__(self, accept: int):
        self.accept = accept
        self.sent: list[list[tuple[str, int]]] = []
        self.app = self

    @contextlib.contextmanager
    def producer_or_acquire(self):
        yield None

    def apply_async(self, args, producer, task_id):
        if len(self.sent) >= self.accept:
            raise OperationalError("Error 111 connecting to 127.0.0.1. Connection refused.")
        self.sent.append(args[0])


def test_deliveries_the_broker_refused_are_given_back_due_now(private_db):
    queue = Queue(private_db)
    now = time.time()
    tasks = [_task(i, str(200 + i), now) for i in range(4)]
    for i, task in enumerate(tasks):
        _store(queue, task, now - 10 + i)
    found = claim_due(private_db.register_script(_CLAIM), queue_lease=3600)
    broker = _Broker(accept=1)

    with pytest.raises(NotPublished) as refused:
        publish(broker, found.deliveries, size=2)
    assert broker.sent == [found.deliveries[:2]]
    assert refused.value.deliveries == found.deliveries[2:]  # the rest, not the sent ones

    assert queue.give_back(refused.value.deliveries) == 2
    due = {m.decode(): s for m, s in private_db.zrange(keys.DUE, 0, -1, withscores=True)}
    for task in tasks[2:]:  # due now, for any relay
        assert due[task.id] <= time.time()
    for task in tasks[:2]:  # published: they keep the claim's lease
        assert due[task.id] > now + 3000
    assert private_db.llen(keys.WAKE) == 1
    # given back twice (a retry after a blip): nothing changes the second time
    assert queue.give_back(refused.value.deliveries) == 0
