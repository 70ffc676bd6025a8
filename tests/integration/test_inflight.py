"""A vendor's ``concurrency:`` caps its calls in flight across every worker (a slot
semaphore in Redis): the simulator never sees more at once, every task is still applied
(those that found no slot are deferred, spending no attempt), and every slot is given back,
or freed when its lease ends if the worker died mid-call."""

from __future__ import annotations

import threading
import time

import pytest

from config.loader import load_config
from tests.helpers import deliver, make_settings, perfex_config, store_perfex_task
from worker import keys
from worker.inflight import InFlight
from worker.queue import Queue

TARGETS = [str(100 + n) for n in range(12)]


def test_slots_up_to_the_limit_then_none_then_freed(private_db):
    slots = InFlight(private_db)
    taken = [slots.take("v", 2, lease=30, wait=0) for _ in range(2)]
    assert all(taken)
    assert slots.take("v", 2, lease=30, wait=0.05) is None  # it waited, then gave up
    slots.release("v", taken[0])
    assert slots.take("v", 2, lease=30, wait=0) is not None


def test_a_dead_workers_slot_is_freed_when_its_lease_ends(private_db):
    slots = InFlight(private_db)
    assert slots.take("v", 1, lease=0.2, wait=0)  # never released: its worker died
    assert slots.take("v", 1, lease=0.2, wait=0) is None
    time.sleep(0.3)
    assert slots.take("v", 1, lease=0.2, wait=0) is not None


@pytest.fixture
def capped(tmp_path, redis_server, private_db, sandbox, redis, monkeypatch):
    """A runtime on database 7 whose PerfexCRM may have 2 calls in flight, 8 per process."""
    from worker.runtime import build_runtime

    monkeypatch.setenv("SANDBOX_URL", sandbox.url)
    config = perfex_config(tmp_path, concurrency=2, max_in_flight=8)
    rt = build_runtime(
        make_settings(redis_server.url.rsplit("/", 1)[0] + "/7"), load_config(config)
    )
    assert rt.config.vendors["perfex"].concurrency == 2
    sandbox.reset("perfexcrm")
    for target in TARGETS:
        sandbox.http.put(f"/perfexcrm/_sim/records/{target}", json={"userid": target})
    sandbox.knobs("perfexcrm", latency_ms=150)
    yield rt
    rt.redis.close()


def test_the_cap_holds_across_concurrent_deliveries(capped, private_db, sandbox):
    queue = Queue(private_db)
    tasks = [store_perfex_task(queue, f"evt-cap-{t}", f"v{t}", target=t) for t in TARGETS]
    outcomes: dict[str, str] = {}

    def run(task) -> None:
        while (outcome := deliver(capped, queue, task)) == "deferred":
            pass  # no slot came free within a second: the relay would send it again
        outcomes[task.id] = outcome

    threads = [threading.Thread(target=run, args=(task,)) for task in tasks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes.values()) == ["applied"] * len(TARGETS)
    assert sandbox.http.get("/perfexcrm/_sim/stats").json()["peak_in_flight"] == 2
    assert private_db.zcard(keys.inflight("perfex")) == 0  # every slot given back
    for task in tasks:  # a deferral is no attempt
        record = queue.load_task(task.id)
        assert record is not None and [a["outcome"] for a in record.attempts] == ["applied"]


def test_perfex_and_porta_default_to_the_vendor_files_five_in_flight(tmp_path, monkeypatch):
    monkeypatch.setenv("SANDBOX_URL", "http://127.0.0.1:9")
    assert load_config(perfex_config(tmp_path)).vendors["perfex"].concurrency == 5  # unset
    lifted = load_config(perfex_config(tmp_path, concurrency="null")).vendors["perfex"]
    assert lifted.concurrency is None  # an explicit null: no shared cap
    porta = tmp_path / "porta.yaml"
    porta.write_text(
        "sources: {}\nrules: []\nvendors:\n  porta:\n    kind: portabilling\n"
        "    base_url: http://127.0.0.1:9\n    auth: {login: l, token: t}\n"
        "  halo:\n    kind: halopsa\n    base_url: http://127.0.0.1:9\n"
        "    auth: {client_id: c, client_secret: s}\n"
    )
    vendors = load_config(porta).vendors
    assert (vendors["porta"].concurrency, vendors["halo"].concurrency) == (5, None)
