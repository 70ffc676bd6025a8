"""Redis Sentinel failover: the master is SIGKILLed, a Sentinel promotes a replica, and
ingest and a real Celery worker (``REDIS_URL=sentinel://...``) carry on.

Processes: a Redis master, two replicas, one Sentinel (quorum 1, down after 1 s), a Celery
worker process; the web app runs in this process on the same Sentinel URL, with
``SWITCHBOARD_MIN_REPLICAS=1`` (each event confirmed by a replica before its 2xx).

1. The worker and ingest follow a failover: while there is no master, webhooks get a JSON
   503 (the sender retries), never a 500; every event answered 2xx before or after it is
   applied at the vendor exactly once; the worker needs no restart. The worker is idle at
   the kill (a vendor call whose completion the dead master never recorded would be made
   again: delivery is at least once).
2. No acknowledged webhook is lost with the master: replicas that fall behind make ingest
   answer 503 instead of 202, so the events are resent and land on the new master. With
   ``SWITCHBOARD_MIN_REPLICAS=0`` this test fails: the events answered 202 are gone.
3. A vendor call in flight at the kill is recorded once (the worker retries recording).
4. With ``SWITCHBOARD_MIN_REPLICAS`` in the worker too, an outcome the master recorded but
   never replicated before dying is recorded again on the new master: the vendor is not
   called a second time. Without it this test fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib

from config import embedded_redis
from tests.helpers import (
    RedisServer,
    make_settings,
    start_worker,
    stripe_headers,
    wait_for,
    with_changes,
    worker_env,
)
from worker.queue import Queue
from worker.runtime import connect

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(180)]

MASTER_NAME = "sbfail"
TARGETS = [str(t) for t in range(3000, 3010)]


class Topology:
    """A master, two replicas and one Sentinel watching them, all on loopback.

    Two replicas, because ingest runs with ``SWITCHBOARD_MIN_REPLICAS=1``: after a
    failover the new master still has one (a lone replica, once promoted, has none, and
    ingest would answer 503 until the old master came back as a replica)."""

    def __init__(self, root: Path):
        self.master = RedisServer(root / "master")
        self.replicas = [RedisServer(root / "replica1"), RedisServer(root / "replica2")]
        self.sentinel_port = embedded_redis.free_port()
        self.root = root
        self.sentinel: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"sentinel://127.0.0.1:{self.sentinel_port}/0"

    def start(self) -> None:
        self.master.start()
        for replica in self.replicas:
            replica.start(replica_of=self.master)
        conf = self.root / "sentinel.conf"
        conf.write_text(
            f"port {self.sentinel_port}\nbind 127.0.0.1\ndir {self.root}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master.port} 1\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
            f"sentinel failover-timeout {MASTER_NAME} 10000\n"
        )
        binary = embedded_redis.server_args(self.root, self.sentinel_port)[0]
        self.sentinel = subprocess.Popen(
            [binary, str(conf), "--sentinel"], stdout=subprocess.DEVNULL
        )
        embedded_redis.wait_ready(f"redis://127.0.0.1:{self.sentinel_port}/0")
        wait_for(lambda: self.master_port() == self.master.port and self.synced())

    def synced(self) -> bool:
        return self.master.replica_synced(len(self.replicas))

    def promoted(self) -> bool:
        """A Sentinel has made one of the replicas the master."""
        return self.master_port() in {r.port for r in self.replicas}

    def master_port(self) -> int | None:
        sentinel = redis_lib.Redis(port=self.sentinel_port, socket_timeout=2)
        found = sentinel.execute_command("SENTINEL", "get-master-addr-by-name", MASTER_NAME)
        return int(found[1]) if found else None

    def stop(self) -> None:
        if self.sentinel is not None:
            self.sentinel.terminate()
            self.sentinel.wait(timeout=10)
        for server in (*self.replicas, self.master):
            server.stop()


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[Topology]:
    topo = Topology(tmp_path)
    try:
        topo.start()
        yield topo
    finally:
        topo.stop()


def post(client, event_id: str, target: str, amount: int):
    body = with_changes(
        "stripe/payment_intent.succeeded.json",
        id=event_id,
        created=1_763_900_000 + amount,  # later events are newer: the last one wins
        data={
            "object": {
                "id": f"pi_{event_id}",
                "object": "payment_intent",
                "amount_received": amount,
                "metadata": {"perfex_customer": target},
            }
        },
    )
    return client.post("/webhooks/stripe", data=body, headers=stripe_headers(body))


def send_until_accepted(client, event_id: str, target: str, amount: int, codes: list[int]):
    """Post one event until it is accepted, as a gateway retries; notes every status."""
    deadline = time.monotonic() + 60
    while True:
        response = post(client, event_id, target, amount)
        codes.append(response.status_code)
        if response.status_code in (200, 202):
            return
        assert response.status_code == 503, response.get_data(as_text=True)
        assert response.get_json()["error"]["code"], response.get_data(as_text=True)
        assert time.monotonic() < deadline, "no master came back within 60 s"
        time.sleep(0.1)


def seed_targets(sandbox) -> None:
    template = sandbox.record("perfexcrm", 7)
    for rid in TARGETS:
        sandbox.http.put(
            f"/perfexcrm/_sim/records/{rid}", json={**template, "userid": rid}
        ).raise_for_status()


def applied_all(store: redis_lib.Redis, event_ids) -> bool:
    """Every event's task is finished as applied (or stale: a newer event got there first)."""
    queue = Queue(store)
    for event_id in event_ids:
        try:
            loaded = queue.load_event("stripe", event_id)
        except redis_lib.ConnectionError:  # the Sentinels still settling on the new master
            return False
        assert loaded is not None, f"{event_id} was answered 2xx but is not stored"
        record = queue.load_task(loaded[1][0])
        if record is None or record.state not in ("applied", "stale"):
            return False
    return True


def vendor_writes(sandbox) -> list[str]:
    return [e["body"]["vat"] for e in sandbox.log("perfexcrm") if e["method"] == "PUT"]


@pytest.fixture
def setup(topology, sandbox, tmp_path, monkeypatch):
    """(web test client, Redis client via Sentinel, a start_worker() for this topology)."""
    from webhooks import create_app

    seed_targets(sandbox)
    monkeypatch.setenv("SWITCHBOARD_SENTINEL_MASTER", MASTER_NAME)
    monkeypatch.setenv("SANDBOX_URL", sandbox.url)
    env = worker_env(
        topology.url,
        sandbox.url,
        SWITCHBOARD_SENTINEL_MASTER=MASTER_NAME,
        SWITCHBOARD_RUN_LEASE="5",
        SWITCHBOARD_QUEUE_LEASE="10",
    )
    workers = []

    def worker(**extra: str):
        workers.append(start_worker({**env, **extra}, "wfail", log=tmp_path / "worker.log"))
        return workers[-1]

    settings = make_settings(topology.url, min_replicas=1, replica_timeout=0.3)
    yield create_app(settings).test_client(), connect(topology.url), worker
    for process in workers:
        process.terminate()
        process.wait(timeout=20)


def test_the_worker_and_ingest_follow_a_failover(topology, sandbox, setup):
    client, store, start = setup
    worker = start()
    codes: list[int] = []
    sent: list[str] = []
    wait_for(lambda: store.hlen("sb:heartbeats") > 0)
    for i in range(30):  # before the failover
        sent.append(f"evt_fo_a{i}")
        send_until_accepted(client, sent[-1], TARGETS[i % len(TARGETS)], 100 + i, codes)
    # no vendor call in flight at the kill: a call whose completion the dead master never
    # recorded is made again (at least once), which would blur the count below
    wait_for(lambda: applied_all(store, sent), timeout=60)
    wait_for(topology.synced)
    topology.master.stop("kill")
    for i in range(30):  # during and after it: retried until a master takes them
        sent.append(f"evt_fo_b{i}")
        send_until_accepted(client, sent[-1], TARGETS[i % len(TARGETS)], 200 + i, codes)
    wait_for(topology.promoted, timeout=30)
    wait_for(lambda: applied_all(store, sent), timeout=60)
    assert worker.poll() is None, "the worker died in the failover"
    assert 500 not in codes and 503 in codes  # the gap was answered, and never with a 500
    vats = vendor_writes(sandbox)
    assert len(vats) == len(set(vats)), "an event was written to the vendor twice"
    for i, target in enumerate(TARGETS):  # each target ends with its newest value
        newest = max(200 + j for j in range(30) if j % len(TARGETS) == i)
        assert sandbox.record("perfexcrm", target)["vat"] == f"paid {newest / 100}"


def test_with_min_replicas_no_acknowledged_webhook_is_lost(topology, sandbox, setup):
    """The replicas fall behind (stopped, links cut) while events arrive, then the master
    dies. Without SWITCHBOARD_MIN_REPLICAS those events would be answered 202 from the
    master alone and vanish with it; with it they are answered 503, resent, and stored on
    the new master."""
    client, store, start = setup
    accepted: list[str] = []
    waiting: list[tuple[str, str, int]] = []  # answered 503: the gateway will resend
    for i in range(5):
        send_until_accepted(client, f"evt_mr_a{i}", TARGETS[i], 300 + i, [])
        accepted.append(f"evt_mr_a{i}")
    lagging = [r.process.pid for r in topology.replicas if r.process is not None]
    for pid in lagging:
        os.kill(pid, signal.SIGSTOP)
    # cut their links too: what a stopped replica's socket already holds still reaches it
    redis_lib.Redis.from_url(topology.master.url).client_kill_filter(_type="replica")
    try:
        for i in range(5):  # the replica is stopped: no confirmation
            event = (f"evt_mr_b{i}", TARGETS[5 + i], 400 + i)
            status = post(client, *event).status_code
            (accepted.append(event[0]) if status in (200, 202) else waiting.append(event))
        topology.master.stop("kill")
    finally:
        for pid in lagging:
            os.kill(pid, signal.SIGCONT)
    wait_for(topology.promoted, timeout=30)
    for event in waiting:
        send_until_accepted(client, *event, [])
        accepted.append(event[0])
    start()
    wait_for(lambda: applied_all(store, accepted), timeout=60)
    assert len(accepted) == 10
    assert sorted(vendor_writes(sandbox)) == sorted(
        [f"paid {(300 + i) / 100}" for i in range(5)]
        + [f"paid {(400 + i) / 100}" for i in range(5)]
    )


def test_a_vendor_call_in_flight_at_the_kill_is_recorded_once(topology, sandbox, setup):
    """The master dies while the worker waits for the vendor: the worker records the
    outcome on the new master once it is promoted (it retries that step), so the vendor
    is not called a second time when the task's lease runs out; and the worker process,
    which held that task's unacknowledged message, survives."""
    client, store, start = setup
    worker = start()
    wait_for(lambda: store.hlen("sb:heartbeats") > 0)
    sandbox.knobs("perfexcrm", latency_ms=1500)  # under the connector's 2 s timeout
    send_until_accepted(client, "evt_fo_inflight", TARGETS[0], 500, [])
    wait_for(lambda: vendor_writes(sandbox) == ["paid 5.0"])  # the call is under way
    wait_for(topology.synced)  # what begin wrote (lock, lease) is on the replicas
    topology.master.stop("kill")
    wait_for(lambda: applied_all(store, ["evt_fo_inflight"]), timeout=60)
    assert vendor_writes(sandbox) == ["paid 5.0"]
    # the worker lived through it (kombu's close of a channel holding an unacknowledged
    # message used to crash it: worker.broker) and still takes work
    sandbox.knobs("perfexcrm", latency_ms=0)
    send_until_accepted(client, "evt_fo_after", TARGETS[1], 501, [])
    wait_for(lambda: applied_all(store, ["evt_fo_after"]), timeout=30)
    assert worker.poll() is None


def test_with_min_replicas_an_outcome_the_dead_master_took_is_recorded_again(
    topology, sandbox, setup
):
    """The vendor call ends while the replicas are stopped: its outcome is on the master
    only. The master dies. The worker, unconfirmed, writes the outcome again on the new
    master, so the task is not run a second time (its run lease is a minute: a second run
    would come too late for the wait below, and would be a second vendor write)."""
    client, store, start = setup
    start(
        SWITCHBOARD_MIN_REPLICAS="1",
        SWITCHBOARD_REPLICA_TIMEOUT="0.3",
        SWITCHBOARD_RUN_LEASE="60",
    )
    wait_for(lambda: store.hlen("sb:heartbeats") > 0)
    sandbox.knobs("perfexcrm", latency_ms=1500)
    send_until_accepted(client, "evt_fo_unconfirmed", TARGETS[2], 600, [])
    wait_for(lambda: vendor_writes(sandbox) == ["paid 6.0"])  # the call is under way
    wait_for(topology.synced)  # begin's lock and lease are on the replicas
    master = redis_lib.Redis.from_url(topology.master.url)
    task_id = Queue(master).load_event("stripe", "evt_fo_unconfirmed")[1][0]
    lagging = [r.process.pid for r in topology.replicas if r.process is not None]
    for pid in lagging:
        os.kill(pid, signal.SIGSTOP)
    master.client_kill_filter(_type="replica")
    try:  # the outcome lands on the master alone
        wait_for(lambda: master.hget(f"sb:task:{task_id}", "state") == b"applied", timeout=10)
        topology.master.stop("kill")
    finally:
        for pid in lagging:
            os.kill(pid, signal.SIGCONT)
    wait_for(topology.promoted, timeout=30)
    wait_for(lambda: applied_all(store, ["evt_fo_unconfirmed"]), timeout=45)
    assert vendor_writes(sandbox) == ["paid 6.0"]
