"""Redis going away while a vendor call is in flight is ridden out: the outcome is recorded
once Redis is back, and the vendor is called once. What only advises around the call (the
circuit breaker's counts, a shared in-flight slot) must not stand in the way: before,
either one raised first and the task ran, and called the vendor, again after its lease."""

from __future__ import annotations

import threading
import time

import pytest

from config.loader import load_config
from tests.helpers import TEST_CONFIG, RedisServer, deliver, make_settings, store_perfex_task
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

    text = TEST_CONFIG.read_text()
    if cap:
        text = text.replace("    timeout: 2\n", "    timeout: 2\n    concurrency: 2\n", 1)
    config = tmp_path / "switchboard.yaml"
    config.write_text(text)
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

    def outage() -> None:
        time.sleep(0.3)  # the call is in flight
        server.stop()
        time.sleep(1.5)
        server.start()

    thread = threading.Thread(target=outage)
    thread.start()
    try:
        outcome = deliver(rt, queue, task)
    finally:
        thread.join()
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
