"""Delivery guarantees, each on its own: ordering, stale fields, rate limit, Retry-After,
circuit breaker, retries that wait in Redis (not in Celery), worker death, SIGTERM, and a
Redis restart. Real parts: a private redis-server (``appendfsync always``), two Celery
worker processes on ``tests/config/switchboard.delivery.yaml``, the simulators over HTTP.
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib

from config import embedded_redis
from config.loader import load_config
from tests.helpers import ROOT, make_settings, stripe_headers, wait_for, with_changes
from worker import keys
from worker.circuit import FAILURE_WINDOW, Circuit, circuit_states
from worker.model import Event, UpdateTask
from worker.queue import Queue
from worker.ratelimit import RateLimiter
from worker.retry import MAX_RETRY_AFTER, Retry, attempts_in_run, decide
from worker.vendors import errors
from worker.vendors.base import RetryPolicy, parse_retry_after

CONFIG = ROOT / "tests" / "config" / "switchboard.delivery.yaml"
TARGETS = [str(i) for i in range(100, 140)]


# -- processes ---------------------------------------------------------------------------
class Server:
    """redis-server with ``appendfsync always`` (as the embedded one): a kill loses nothing."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.port = embedded_redis.free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = embedded_redis.server_args(self.directory, self.port, fsync="always")
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        embedded_redis.wait_ready(self.url)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None:
            self.process.send_signal(sig)
            self.process.wait(timeout=15)
            self.process = None


class Workers:
    """Celery worker processes on the delivery config; stderr to files (never a full pipe)."""

    def __init__(self, redis_url: str, sandbox_url: str, logs: Path, **extra: str):
        self.env = dict(os.environ)
        self.env.update(
            {
                "REDIS_URL": redis_url,
                "SWITCHBOARD_CONFIG": str(CONFIG),
                "SANDBOX_URL": sandbox_url,
                "PYTHONPATH": str(ROOT),
                "SWITCHBOARD_RUN_LEASE": "3",
                "SWITCHBOARD_QUEUE_LEASE": "20",
                **extra,
            }
        )
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - lives with the process
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker", "worker", "--pool", "threads"]
            + ["-c", "4", "-n", f"{name}@%h", "--without-mingle", "--without-gossip"]
            + ["-l", "warning"],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        self.procs[name] = proc
        return proc

    def ensure(self, names: tuple[str, ...] = ("d1", "d2")) -> None:
        for name in names:
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                self.start(name)

    def signal_all(self, sig: int) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(sig)

    def wait_all(self, timeout: float = 30) -> list[int]:
        return [proc.wait(timeout=timeout) for proc in self.procs.values()]

    def stop(self) -> None:
        self.signal_all(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("delivery-redis"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def workers(server, sandbox_server, tmp_path_factory) -> Iterator[Workers]:
    ws = Workers(server.url, sandbox_server.url, tmp_path_factory.mktemp("delivery-logs"))
    yield ws
    ws.stop()


@pytest.fixture
def r(server: Server, workers: Workers, sandbox, monkeypatch) -> redis_lib.Redis:
    """Clean Redis, both workers up and beating, simulators reset, test targets seeded."""
    monkeypatch.setenv("SANDBOX_URL", sandbox.url)  # for apps built in the tests
    if server.process is None:
        server.start()
    client = redis_lib.Redis.from_url(server.url)
    # our keys only: flushdb would also drop kombu's queue bindings (_kombu.*) under the
    # running workers, and later publishes would go to kombu's undeliverable queue
    stale = list(client.scan_iter("sb:*", count=1000))
    if stale:
        client.delete(*stale)
    workers.ensure()
    for rid in TARGETS:
        sandbox.http.put(f"/perfexcrm/_sim/records/{rid}", json={"userid": rid}).raise_for_status()
    wait_for(lambda: client.hlen(keys.HEARTBEATS) >= 2, timeout=30)
    return client


def enqueue(
    client: redis_lib.Redis,
    target: str,
    fields: dict,
    occurred_at: float,
    vendor: str = "perfex",
    op: str = "update_customer",
) -> UpdateTask:
    event = Event("test", uuid.uuid4().hex, "manual", occurred_at, time.time(), {})
    task = UpdateTask(
        "test", event.id, "manual", "manual", 0, vendor, op, target, fields, occurred_at
    )  # fmt: skip
    assert Queue(client).store_event(event, [task])
    return task


def state(client: redis_lib.Redis, task: UpdateTask) -> str:
    record = Queue(client).load_task(task.id)
    return record.state if record else "missing"


def all_done(client: redis_lib.Redis, tasks: list[UpdateTask]) -> bool:
    return all(state(client, t) in ("applied", "stale", "dead") for t in tasks)


def puts(sandbox, target: str | None = None) -> list[dict]:
    log = [e for e in sandbox.log("perfexcrm") if e["method"] == "PUT"]
    if target is not None:
        log = [e for e in log if e["path"].endswith(f"/customers/{target}")]
    return log


# -- ordering ----------------------------------------------------------------------------
def test_tasks_for_one_target_never_overlap_across_workers(r, sandbox):
    sandbox.knobs("perfexcrm", latency_ms=80)
    # same occurred_at: none is stale, so every one of them calls the vendor
    tasks = [enqueue(r, "100", {"phonenumber": f"p{i}"}, 1000.0) for i in range(16)]
    tasks += [enqueue(r, "101", {"phonenumber": f"q{i}"}, 1000.0) for i in range(8)]
    wait_for(lambda: all_done(r, tasks), timeout=60)
    assert {state(r, t) for t in tasks} == {"applied"}
    arrivals = sorted(e["at"] for e in puts(sandbox, "100"))
    assert len(arrivals) == 16
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    # each call takes >= 80 ms at the vendor; the next one may only arrive after it
    assert min(gaps) >= 0.075, gaps
    # ...while the other target was served at the same time (the lock is per target)
    other = sorted(e["at"] for e in puts(sandbox, "101"))
    assert other[0] < arrivals[-1]


def test_stale_event_does_not_overwrite_a_newer_field(r, sandbox):
    newer = enqueue(r, "102", {"city": "Newtown"}, 2000.0)
    wait_for(lambda: state(r, newer) == "applied")
    older = enqueue(r, "102", {"city": "Oldtown"}, 1000.0)
    wait_for(lambda: state(r, older) == "stale")
    record = Queue(r).load_task(older.id)
    assert record is not None and record.stale_fields == ["city"]
    assert sandbox.record("perfexcrm", 102)["city"] == "Newtown"
    assert len(puts(sandbox, "102")) == 1


def test_partly_stale_task_still_applies_its_fresh_fields(r, sandbox):
    newer = enqueue(r, "103", {"city": "Newtown"}, 2000.0)
    wait_for(lambda: state(r, newer) == "applied")
    older = enqueue(r, "103", {"city": "Oldtown", "zip": "OLD 1"}, 1000.0)
    wait_for(lambda: state(r, older) == "applied")
    record = Queue(r).load_task(older.id)
    assert record is not None and record.stale_fields == ["city"]
    assert sandbox.record("perfexcrm", 103)["city"] == "Newtown"
    assert sandbox.record("perfexcrm", 103)["zip"] == "OLD 1"
    assert puts(sandbox, "103")[-1]["body"] == {"zip": "OLD 1"}
    assert r.hget(keys.field_versions("perfex", "103"), "zip") == b"1000.0"
    assert r.hget(keys.field_versions("perfex", "103"), "city") == b"2000.0"


def test_a_customer_and_an_account_with_one_number_are_ordered_apart(r, sandbox):
    # PortaBilling numbers customers and accounts separately: a newer update of account
    # 1001 made an older update of customer 1001 "stale", and the customer stayed as it was
    account = {**sandbox.record("portabilling", "account:2001"), "i_account": 1001}
    sandbox.http.put("/portabilling/_sim/records/account:1001", json=account).raise_for_status()
    newer = enqueue(r, "1001", {"bill_status": "S"}, 2000.0, vendor="porta", op="update_account")
    wait_for(lambda: state(r, newer) == "applied")
    older = enqueue(r, "1001", {"bill_status": "O"}, 1000.0, vendor="porta")
    wait_for(lambda: state(r, older) == "applied")
    assert sandbox.record("portabilling", "customer:1001")["bill_status"] == "O"
    assert sandbox.record("portabilling", "account:1001")["bill_status"] == "S"


def test_an_older_event_still_sets_the_members_of_a_group_a_newer_one_left(r, sandbox):
    # Soliditech's physical_address is one field of members: a newer city-only change made
    # an older full address "stale" whole, leaving the old street with the new city
    city = {"physical_address": {"city": "Manchester"}}
    newer = enqueue(r, "5005", city, 2000.0, vendor="soli")
    wait_for(lambda: state(r, newer) == "applied")
    moved = {"address_line1": "14 Deansgate", "city": "Leeds", "street_code": "M3 2BA"}
    older = enqueue(r, "5005", {"physical_address": moved}, 1000.0, vendor="soli")
    wait_for(lambda: state(r, older) == "applied")
    record = Queue(r).load_task(older.id)
    assert record is not None and record.stale_fields == ["physical_address.city"]
    address = sandbox.record("soliditech", 5005)["physicalAddress"]
    assert (address["addressLine1"], address["city"], address["streetCode"]) == (
        "14 Deansgate",
        "Manchester",
        "M3 2BA",
    )


# -- rate limit ----------------------------------------------------------------------------
def test_rate_limit_is_shared_by_two_worker_processes(r, sandbox):
    tasks = [
        enqueue(r, target, {"website": f"w{i}"}, 1000.0, vendor="perfex-limited")
        for i, target in enumerate(TARGETS[:25])
    ]
    wait_for(lambda: all_done(r, tasks), timeout=60)
    assert {state(r, t) for t in tasks} == {"applied"}
    for t in tasks:  # waited, never failed: one attempt each, no dead letters
        record = Queue(r).load_task(t.id)
        assert record is not None and len(record.attempts) == 1
    assert r.zcard(keys.DEAD_INDEX) == 0
    arrivals = sorted(e["at"] for e in puts(sandbox))
    assert len(arrivals) == 25

    # at most 5 calls per second window: counted on the simulator's arrival times, which
    # carry a few ms of HTTP jitter, so windows a little under a second (and one call slack)
    def busiest(width: float) -> int:
        return max(sum(1 for b in arrivals if a <= b < a + width) for a in arrivals)

    shown = str([round(a - arrivals[0], 3) for a in arrivals])
    assert busiest(0.9) <= 6, shown
    assert busiest(1.9) <= 11, shown
    # ... so 25 calls need about 4 s or more, never the ~0.1 s they take unlimited
    assert arrivals[-1] - arrivals[0] >= 3.5


def test_rate_limiter_allows_exactly_count_per_window(r):
    limiter = RateLimiter(r)
    goes = [limiter.acquire("unit", 5, 1.0) for _ in range(8)]
    assert goes[:5] == [0.0] * 5
    assert all(0 < wait <= 1.0 for wait in goes[5:])


def test_a_rate_limit_slot_lost_again_and_again_defers_the_task_within_its_lock(
    redis_server, private_db, sandbox, tmp_path, monkeypatch
):
    """Waits for a rate-limit slot are slept only up to RATE_WAIT_INLINE in all: a task
    that keeps losing the slot to others is deferred, so it never outlives the lock and
    lease its run was given (and never sends its value after a newer task's)."""
    from tests.helpers import deliver, perfex_config, store_perfex_task
    from worker.runtime import build_runtime

    monkeypatch.setenv("SANDBOX_URL", sandbox.url)
    config = load_config(perfex_config(tmp_path, rate_limit='"1/s"'))
    runtime = build_runtime(make_settings(redis_server.url.rsplit("/", 1)[0] + "/7"), config)
    queue = Queue(private_db)
    task = store_perfex_task(queue, "evt-rate-starved", "paid 1")
    hammering = threading.Event()
    hammering.set()

    def take_every_slot() -> None:  # other workers: the window's one call is always
        while hammering.is_set():  # half a second old, so a slot is always 0.5 s away
            with private_db.pipeline(transaction=True) as pipe:
                pipe.delete(keys.rate("perfex"))
                pipe.zadd(keys.rate("perfex"), {"other": time.time() - 0.5})
                pipe.execute()
            time.sleep(0.005)

    other = threading.Thread(target=take_every_slot, daemon=True)
    other.start()
    try:
        outcome = deliver(runtime, queue, task)
        still_starved = hammering.is_set()
    finally:
        hammering.clear()
        other.join()
    assert (outcome, still_starved) == ("deferred", True)  # it gave up; it did not outwait
    assert private_db.zscore(keys.DUE, task.id) is not None  # due again later, not lost


def test_a_runs_lock_and_lease_cover_every_request_its_op_can_make(runtime):
    """A PortaBilling or HaloPSA op may log in, call, log in again and call again: the
    run's lock and lease must outlast all four, or a newer task could run beside it."""
    import dataclasses

    from worker.timing import call_seconds, hold_seconds

    perfex = dataclasses.replace(runtime.config.vendors["perfex"], timeout=60.0)
    one_call = call_seconds(perfex)
    assert hold_seconds(runtime, perfex) >= one_call
    for kind in ("portabilling", "halopsa"):
        assert hold_seconds(runtime, dataclasses.replace(perfex, kind=kind)) >= 4 * one_call


# -- retries -------------------------------------------------------------------------------
def test_429_retry_after_seconds_delays_the_retry(r, sandbox):
    sandbox.knobs("perfexcrm", ratelimit_next=1, retry_after="2")
    task = enqueue(r, "104", {"city": "Later"}, 1000.0)
    wait_for(lambda: state(r, task) == "applied", timeout=20)
    first, second = (e["at"] for e in puts(sandbox, "104"))
    assert second - first >= 1.95
    record = Queue(r).load_task(task.id)
    assert record is not None
    assert [a["status"] for a in record.attempts] == [429, 200]
    assert attempts_in_run(record.attempts) == 1  # the 429 spent no attempt


def test_429_retry_after_http_date_delays_the_retry(r, sandbox):
    when = email.utils.formatdate(time.time() + 3, usegmt=True)  # whole seconds
    sandbox.knobs("perfexcrm", ratelimit_next=1, retry_after=when)
    task = enqueue(r, "105", {"city": "Later"}, 1000.0)
    wait_for(lambda: state(r, task) == "applied", timeout=20)
    first, second = (e["at"] for e in puts(sandbox, "105"))
    assert second - first >= 1.9


def test_a_long_wait_lives_in_redis_not_in_celery(r, sandbox):
    """The retry is a score in sb:due; Celery holds no message (no eta, nothing unacked),
    so no visibility timeout can redeliver it early."""
    sandbox.knobs("perfexcrm", ratelimit_next=1, retry_after="600")
    task = enqueue(r, "106", {"city": "Much later"}, 1000.0)
    wait_for(lambda: (Queue(r).load_task(task.id) or task).state == "retrying")  # type: ignore[union-attr]
    due = r.zscore(keys.DUE, task.id)
    assert due is not None and due >= time.time() + 590
    time.sleep(0.5)
    assert r.llen(keys.CELERY_QUEUE) == 0
    assert r.hlen("unacked") == 0 and r.zcard("unacked_index") == 0
    assert len(puts(sandbox, "106")) == 1


def test_retry_policy_backoff_and_retry_after_floor():
    policy = RetryPolicy(max_attempts=5, base_delay=1.0, max_delay=8.0)
    rng = random.Random(1)
    delays = [decide(errors.Unavailable("x"), n, policy, rng) for n in range(1, 5)]
    for n, decision in enumerate(delays, start=1):
        assert isinstance(decision, Retry) and 0 <= decision.delay <= min(8.0, 2 ** (n - 1))
    limited = decide(errors.RateLimited("x", retry_after=30.0), 1, policy, rng)
    assert isinstance(limited, Retry) and limited.delay >= 30.0
    down = decide(errors.Unavailable("x", retry_after=120.0), 1, policy, rng)  # a 503 too
    assert isinstance(down, Retry) and down.delay >= 120.0
    for years in (86400.0 * 1000, 1e300):  # "Retry-After: 86400000", an HTTP date in 2100
        far = decide(errors.RateLimited("x", retry_after=years), 1, policy, rng)
        assert far == Retry(MAX_RETRY_AFTER)  # a day at most: the task is not parked for good
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after("garbage") is None
    http_date = email.utils.formatdate(1_000_100, usegmt=True)
    assert parse_retry_after(http_date, now=1_000_000) == 100.0
    assert parse_retry_after(email.utils.formatdate(0, usegmt=True)) == 0.0


# -- circuit breaker -----------------------------------------------------------------------
def test_circuit_opens_after_failures_then_recovers(r, sandbox, server):
    from webhooks import create_app

    sandbox.knobs("perfexcrm", fail_next=3, fail_status=503)
    first = enqueue(r, "107", {"city": "Probe"}, 1000.0, vendor="perfex-breaker")
    wait_for(lambda: circuit_states(r, ["perfex-breaker"])["perfex-breaker"]["state"] == "open")
    opened = float(r.hget(keys.circuit("perfex-breaker"), "opened_at"))  # not when we saw it
    # while open, other tasks for the vendor wait: no calls, no attempts spent
    more = [
        enqueue(r, t, {"city": "Queued"}, 1000.0, vendor="perfex-breaker")
        for t in ("108", "109", "110")
    ]
    app = create_app(make_settings(server.url), load_config(CONFIG))
    detail = app.test_client().get("/readyz").get_json()["detail"]
    assert detail["circuits"]["perfex-breaker"]["state"] == "open"
    assert detail["circuits"]["perfex"]["state"] == "closed"
    wait_for(lambda: all_done(r, [first, *more]), timeout=20)
    assert {state(r, t) for t in [first, *more]} == {"applied"}
    calls = puts(sandbox)
    assert [c["at"] >= opened for c in calls].count(True) == 4  # probe + the three
    assert min(c["at"] for c in calls if c["at"] >= opened) >= opened + 1.5  # cooldown 2 s
    for t in more:
        record = Queue(r).load_task(t.id)
        assert record is not None and len(record.attempts) == 1
    assert circuit_states(r, ["perfex-breaker"])["perfex-breaker"]["state"] == "closed"


def test_circuit_half_open_gives_one_probe_and_reopens_on_failure(r):
    c = Circuit(r, "unit", failures=2, cooldown=10, probe_ttl=5)
    assert c.allow(now=100).verdict == "go"
    c.failure(now=100)
    assert c.allow(now=100).verdict == "go"
    assert c.failure(now=101) == "open"
    assert not c.allow(now=105).allowed and c.allow(now=105).wait == pytest.approx(6)
    assert c.allow(now=111).verdict == "probe"
    assert not c.allow(now=111.5).allowed  # one probe at a time
    assert c.allow(now=117).verdict == "probe"  # the first probe's worker died: retaken
    assert c.failure(now=117) == "open"  # a failed probe opens it again
    assert c.allow(now=128).verdict == "probe"
    assert c.success(now=128) == "closed"
    assert c.allow(now=128).verdict == "go"


def test_a_circuit_keeps_redis_time_so_a_host_with_a_fast_clock_does_not_probe_early(
    r, monkeypatch, caplog
):
    c = Circuit(r, "skewed", failures=1, cooldown=30)
    with caplog.at_level(logging.INFO, logger="switchboard.worker"):
        assert c.failure() == "open"  # opened on a host with the right time
        skewed = time.time() + 3600  # another host, an hour ahead
        monkeypatch.setattr(time, "time", lambda: skewed)  # this process's clock
        decision = c.allow()
        assert not decision.allowed and 25 < decision.wait <= 30  # the cooldown holds
        assert 25 < circuit_states(r, ["skewed"])["skewed"]["open_for"] <= 30  # as reported
        assert c.success() == "closed"
    changes = [(rec.levelname, rec.getMessage()) for rec in caplog.records]
    assert ("WARNING", "circuit opened") in changes  # an operator sees a vendor cut off
    assert ("INFO", "circuit closed") in changes  # and back


def test_a_circuit_closed_by_its_probe_says_so(r, caplog):
    c = Circuit(r, "probed", failures=1, cooldown=10)
    with caplog.at_level(logging.INFO, logger="switchboard.worker"):
        assert c.failure(now=100) == "open"
        assert c.allow(now=111).verdict == "probe"  # the usual way back: a probe ...
        assert c.success(now=111) == "closed"  # ... that succeeds
    closed = [r.sb for r in caplog.records if r.getMessage() == "circuit closed"]
    assert [line["was"] for line in closed] == ["half_open"]


def test_circuit_failures_far_apart_do_not_add_up_and_a_quiet_vendor_leaves_nothing(r):
    # the count never aged: 4 timeouts one day and 1 the next month opened the circuit
    c = Circuit(r, "quiet", failures=5, cooldown=10)
    for second in range(4):
        assert c.failure(now=1000 + second) == "closed"
    assert 0 < r.ttl(keys.circuit("quiet")) <= FAILURE_WINDOW  # gone if nothing follows
    assert c.failure(now=1003 + FAILURE_WINDOW + 1) == "closed"  # a new count: 1
    assert circuit_states(r, ["quiet"])["quiet"]["failures"] == 1
    for second in range(4):
        c.failure(now=2000 + FAILURE_WINDOW + second)
    assert c.failure(now=2004 + FAILURE_WINDOW) == "open"  # five within the window
    assert r.ttl(keys.circuit("quiet")) == -1  # open lasts its cooldown, whatever it is


# -- durability ---------------------------------------------------------------------------
def test_worker_killed_mid_task_is_recovered_by_its_lease(r, sandbox, workers):
    sandbox.knobs("perfexcrm", latency_ms=600)
    task = enqueue(r, "111", {"city": "Survivor"}, 1000.0)
    wait_for(lambda: puts(sandbox, "111"), timeout=10)
    workers.signal_all(signal.SIGKILL)
    workers.wait_all()
    sandbox.knobs("perfexcrm", latency_ms=0)
    assert state(r, task) != "applied"
    workers.ensure(("d1",))
    wait_for(lambda: state(r, task) == "applied", timeout=30)
    assert sandbox.record("perfexcrm", 111)["city"] == "Survivor"
    record = Queue(r).load_task(task.id)
    assert record is not None and len(record.attempts) == 1


def test_deliveries_a_killed_worker_had_reserved_run_once_it_is_seen_dead(
    r, sandbox, workers, server, tmp_path
):
    """A worker SIGKILLed with messages reserved and not started: the other worker runs
    them once the dead one has been silent for SWITCHBOARD_WORKER_DEAD_AFTER (3 s here),
    not after the queue lease and kombu's visibility timeout (an hour each, as in
    production). Only the deliveries that were mid-call may reach the vendor twice."""
    workers.signal_all(signal.SIGTERM)
    workers.wait_all()
    crew = Workers(
        server.url,
        sandbox.url,
        tmp_path,
        SWITCHBOARD_QUEUE_LEASE="3600",
        SWITCHBOARD_WORKER_DEAD_AFTER="3",
    )
    try:
        sandbox.knobs("perfexcrm", latency_ms=300)
        tasks = [enqueue(r, t, {"city": f"Held {t}"}, 1000.0) for t in TARGETS[:32]]
        victim = crew.start("victim")
        name = f"victim@{os.uname().nodename}"

        def holds() -> list:  # what the victim says it holds (written within 0.1 s)
            return json.loads(r.get(keys.held(name)) or "[]")

        wait_for(lambda: len(holds()) >= 8, timeout=30)
        # killed once its list has stood for 0.3 s (it is written within 0.1 s of a
        # change): a message reserved in the last 0.1 s is the documented limit (README),
        # left to the hour-long lease, and not what this test is about
        seen = [holds(), time.monotonic()]

        def settled() -> bool:
            now_held = holds()
            if now_held != seen[0]:
                seen[:] = [now_held, time.monotonic()]
            return time.monotonic() - seen[1] >= 0.3

        wait_for(settled, timeout=30, interval=0.02)
        victim.kill()
        victim.wait(timeout=10)
        assert holds() and not all_done(r, tasks)

        crew.start("survivor")
        wait_for(lambda: all_done(r, tasks), timeout=60)

        assert {state(r, t) for t in tasks} == {"applied"}
        assert int(r.hget(keys.RECOVERED, name) or 0) >= 1
        per_target = [len(puts(sandbox, t.target)) for t in tasks]
        assert min(per_target) == 1
        assert sum(per_target) <= len(tasks) + 4  # only the calls in flight (-c 4) twice
    finally:
        crew.stop()
        sandbox.knobs("perfexcrm", latency_ms=0)


def test_sigterm_finishes_the_task_in_flight(r, sandbox, workers):
    sandbox.knobs("perfexcrm", latency_ms=700)
    task = enqueue(r, "112", {"city": "Graceful"}, 1000.0)
    wait_for(lambda: puts(sandbox, "112"), timeout=10)
    workers.signal_all(signal.SIGTERM)
    codes = workers.wait_all(timeout=30)
    assert codes == [0] * len(codes)
    assert state(r, task) == "applied"  # finished before the worker left
    assert len(puts(sandbox, "112")) == 1
    sandbox.knobs("perfexcrm", latency_ms=0)
    workers.ensure()
    time.sleep(1.0)
    assert len(puts(sandbox, "112")) == 1  # and it is not run again by anyone


def test_redis_restart_loses_no_accepted_event(r, sandbox, server):
    from webhooks import create_app

    app = create_app(make_settings(server.url), load_config(CONFIG))
    client = app.test_client()
    ids = []
    for i in range(20):
        body = with_changes("stripe/payment_intent.succeeded.json", id=f"evt_restart_{i}")
        data = json.loads(body)
        data["data"]["object"]["metadata"]["perfex_customer"] = TARGETS[20 + i]
        body = json.dumps(data).encode()
        response = client.post("/webhooks/stripe", data=body, headers=stripe_headers(body))
        assert response.status_code == 202
        ids.append((f"evt_restart_{i}", TARGETS[20 + i]))
    server.stop(signal.SIGKILL)  # no shutdown save: only the fsynced AOF survives
    server.start()
    fresh = redis_lib.Redis.from_url(server.url)
    for event_id, _ in ids:
        assert Queue(fresh).load_event("stripe", event_id) is not None
    for _event_id, target in ids:
        wait_for(lambda t=target: sandbox.record("perfexcrm", t).get("vat") == "paid 49.0", 60)
