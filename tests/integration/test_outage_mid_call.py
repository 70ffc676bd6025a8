"""Redis going away while a vendor call is in flight is ridden out: the outcome is recorded
once Redis is back, and the vendor is called once. What only advises around the call (the
circuit breaker's counts, a shared in-flight slot) must not stand in the way: before,
either one raised first and the task ran, and called the vendor, again after its lease."""

from __future__ import annotations

import threading
import time

import pytest

from config.loader import load_config
from tests.helpers import (
    TEST_CONFIG,
    RedisServer,
    deliver,
    make_settings,
    perfex_config,
    store_perfex_task,
    wait_for,
)
from worker import keys
from worker.queue import Queue


@pytest.fixture
def server(tmp_path):
    srv = RedisServer(tmp_path / "redis")
    srv.start()
    yield srv
    srv.stop()


def _runtime(server, sandbox, tmp_path, cap: bool):
    from worker.runtime import build_runtime

    config = perfex_config(tmp_path, **({"concurrency": 2} if cap else {}))
    return build_runtime(make_settings(server.url), load_config(config))


def _puts(sandbox) -> int:
    return len([e for e in sandbox.log("perfexcrm") if e["method"] == "PUT"])


@pytest.mark.parametrize("advisor", ["circuit", "in-flight slot"])
def test_an_outage_during_the_call_is_ridden_out_with_one_vendor_call(
    server, sandbox, tmp_path, monkeypatch, advisor
):
    monkeypatch.setenv("SANDBOX_URL", sandbox.url)
    rt = _runtime(server, sandbox, tmp_path, cap=advisor == "in-flight slot")
    queue = Queue(rt.redis)
    task = store_perfex_task(queue, f"evt-outage-{advisor}", "paid 1")
    if advisor == "circuit":  # one earlier 5xx: the breaker is asked and told about this call
        rt.redis.hset(keys.circuit("perfex"), "failures", 1)
    sandbox.knobs("perfexcrm", latency_ms=800)
    in_flight: list[int] = []  # the calls the simulator was answering as Redis went away

    def outage() -> None:
        wait_for(lambda: _puts(sandbox) == 1, timeout=10, interval=0.01)  # it has the call
        server.stop()
        try:
            in_flight.append(sandbox.http.get("/perfexcrm/_sim/stats").json()["in_flight"])
            time.sleep(1.5)
        finally:
            server.start()

    thread = threading.Thread(target=outage)
    thread.start()
    try:
        outcome = deliver(rt, queue, task)
    finally:
        thread.join()
    assert in_flight == [1]  # Redis was down while the call was in flight
    assert outcome == "applied"
    assert _puts(sandbox) == 1
    record = queue.load_task(task.id)
    assert record is not None and record.state == "applied"


def test_a_probe_answered_429_is_given_back(runtime, private_db, sandbox):
    """A half-open circuit lets one probe through; a 429 says nothing about the vendor's
    health, so the probe is freed for the next task instead of blocking it for minutes."""
    queue = Queue(private_db)
    task = store_perfex_task(queue, "evt-probe-429", "paid 2")
    private_db.hset(
        keys.circuit("perfex"), mapping={"state": "open", "until": time.time() - 1, "failures": 5}
    )
    sandbox.knobs("perfexcrm", ratelimit_next=1, retry_after="1")
    assert deliver(runtime, queue, task) != "applied"
    circuit = private_db.hgetall(keys.circuit("perfex"))
    assert circuit[b"state"] == b"half_open"
    assert float(circuit[b"probe_until"]) == 0  # free: the next task may probe at once


@pytest.fixture
def worker_runtime(server, sandbox, monkeypatch):
    """The runtime the Celery tasks use (``get_runtime``), built from the environment."""
    for name, value in {
        "REDIS_URL": server.url,
        "SWITCHBOARD_CONFIG": str(TEST_CONFIG),
        "SANDBOX_URL": sandbox.url,
    }.items():
        monkeypatch.setenv(name, value)
    # imported only now: the Celery app reads REDIS_URL on import, and with none set it
    # would start an embedded Redis in ./var (and leave it running)
    import worker.runtime

    monkeypatch.setattr(worker.runtime, "_runtime", None)  # built from this environment
    return worker.runtime.get_runtime()


def test_a_message_arriving_while_redis_restarts_is_run_not_parked(server, sandbox, worker_runtime):
    """Before its tasks begin, a delivery is due again only when the relay's claim lease
    ends (an hour). A message that meets a Redis restart reads its tasks again once Redis
    is back; a delivery that still fails before it begins is given back."""
    from worker.relay import _CLAIM, claim_due
    from worker.tasks import apply_updates

    rt = worker_runtime
    queue = Queue(rt.redis)
    task = store_perfex_task(queue, "evt-restart-before-begin", "paid 3")
    found = claim_due(rt.redis.register_script(_CLAIM), queue_lease=3600)
    assert found.deliveries == [(task.id, 1)]

    server.stop()
    restart = threading.Timer(1.0, server.start)
    restart.start()
    try:
        assert apply_updates(found.deliveries) == ["applied"]
    finally:
        restart.join()
    assert _puts(sandbox) == 1

    # a delivery that failed before it began is due now, not in an hour
    other = store_perfex_task(queue, "evt-given-back", "paid 4", target="8")
    [claimed] = claim_due(rt.redis.register_script(_CLAIM), queue_lease=3600).deliveries
    assert claimed == (other.id, 1)
    assert queue.give_back([claimed]) == 1
    due = rt.redis.zscore(keys.DUE, other.id)
    assert due is not None and due <= time.time()


def test_a_delivery_that_fails_before_it_begins_comes_back_in_seconds(worker_runtime):
    """Not at once (a failure that repeats, a bug, would spin), not in an hour."""
    from worker.relay import _CLAIM, claim_due
    from worker.tasks import GIVE_BACK_AFTER, apply_updates

    rt = worker_runtime
    queue = Queue(rt.redis)
    task = store_perfex_task(queue, "evt-broken-record", "paid 6")
    found = claim_due(rt.redis.register_script(_CLAIM), queue_lease=3600)
    rt.redis.hset(keys.task(task.id), "task", "{not json")  # reading it fails: a bug
    before = time.time()
    with pytest.raises(ValueError):
        apply_updates(found.deliveries)
    due = rt.redis.zscore(keys.DUE, task.id)
    assert due is not None
    assert before + GIVE_BACK_AFTER - 1 <= due <= time.time() + GIVE_BACK_AFTER


def test_429s_without_retry_after_back_off_further_each_time(runtime, private_db, sandbox):
    """A 429 is not an attempt, but asking again at once each time would spend the
    vendor's quota and reach MAX_RATE_LIMITED in a minute: the wait grows with the 429s
    in a row (test config: base_delay 0.05, max_delay 0.2)."""
    queue = Queue(private_db)
    task = store_perfex_task(queue, "evt-429-backoff", "paid 3")
    sandbox.knobs("perfexcrm", ratelimit_next=12, retry_after="")  # no Retry-After
    waits = []
    for _ in range(12):
        assert deliver(runtime, queue, task) == "retrying"
        waits.append(private_db.zscore(keys.DUE, task.id) - time.time())
        private_db.zadd(keys.DUE, {task.id: time.time()})  # due now: run it again
    # full jitter draws each wait from [0, ceiling]: the ceiling grew past base_delay
    assert max(waits[3:]) > 0.05
    assert all(wait <= 0.2 for wait in waits)


def test_a_run_after_a_lost_one_says_so_and_a_deferred_one_does_not(
    runtime, private_db, sandbox, caplog
):
    """A worker that died mid-run leaves no outcome; the run that takes the task over
    must say the vendor may have been called already. A run that began and was deferred
    (busy, rate limit, circuit) ended cleanly: its successor is no such case."""
    import logging

    from worker import ordering

    queue = Queue(private_db)
    task = store_perfex_task(queue, "evt-lost-run", "paid 4")
    record = queue.load_task(task.id)
    assert record is not None
    lock = ordering.TargetLock(private_db, "perfex", task.target)
    begun = runtime.steps.begin(  # a worker begins the run ... and dies: its lock lapses
        task.id, record.gen, "perfex", lock.record, ["vat"], time.time() + 60, lock.token, 60
    )
    assert begun.status == "ok" and not begun.lost_run
    private_db.delete(keys.target_lock("perfex", lock.record))
    with caplog.at_level(logging.INFO, logger="switchboard.worker"):
        assert deliver(runtime, queue, task) == "applied"
    lost = [r for r in caplog.records if r.getMessage() == "task run again after a lost run"]
    assert [(r.levelname, r.sb["task_id"]) for r in lost] == [("WARNING", task.id)]

    caplog.clear()
    other = store_perfex_task(queue, "evt-deferred-run", "paid 5", target="8")
    private_db.hset(keys.circuit("perfex"), mapping={"state": "open", "until": time.time() + 60})
    with caplog.at_level(logging.INFO, logger="switchboard.worker"):
        assert deliver(runtime, queue, other) == "deferred"  # began, then the circuit said no
        private_db.delete(keys.circuit("perfex"))
        assert deliver(runtime, queue, other) == "applied"
    assert not [r for r in caplog.records if "lost run" in r.getMessage()]


def test_a_retrying_task_says_when_its_next_attempt_goes(runtime, private_db, sandbox, caplog):
    import logging

    from worker import metrics as wm

    queue = Queue(private_db)
    task = store_perfex_task(queue, "evt-retry-at", "paid 6")
    sandbox.knobs("perfexcrm", fail_next=1, fail_status=503)
    assert deliver(runtime, queue, task) == "retrying"
    record = queue.load_task(task.id)
    assert record is not None
    due = private_db.zscore(keys.DUE, task.id)
    assert record.attempts[-1]["retry_at"] == pytest.approx(due, abs=0.01)  # ops view
    with caplog.at_level(logging.INFO, logger="switchboard.worker"):
        wm.record_task(private_db, task.id, record.gen, "retrying", 0.01, [],
                       known=(record.task, record.attempts))  # fmt: skip
    [line] = [r.sb for r in caplog.records if r.getMessage() == "task retrying"]
    assert 0 <= line["retry_in_s"] <= due - time.time() + 0.01  # the log line


def test_an_applied_attempt_records_the_vendors_http_status(runtime, private_db, sandbox):
    queue = Queue(private_db)
    task = store_perfex_task(queue, "evt-applied-status", "paid 7")
    assert deliver(runtime, queue, task) == "applied"
    record = queue.load_task(task.id)
    assert record is not None and record.attempts[-1]["status"] == 200  # not null
