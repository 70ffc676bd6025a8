"""Redis Sentinel failover under traffic: the master is SIGKILLed, a Sentinel promotes the
replica, and ingest and a real Celery worker (``REDIS_URL=sentinel://...``) carry on.

Processes: a Redis master, a replica of it, one Sentinel (quorum 1, down after 1 s), a
Celery worker process; the web app runs in this process on the same Sentinel URL.
Checks: while there is no master, webhooks get a JSON 503 (the sender retries), never a
500; every event answered 2xx before or after the failover is applied at the vendor,
once; the worker needed no restart.

Replication is asynchronous: a write the master acknowledged in its last moments can be
lost with it (docs/scaling.md). This test waits for the replica to catch up before the
kill, so it checks the failover itself, not that window.
"""

from __future__ import annotations

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
    """A master, its replica and one Sentinel watching them, all on loopback."""

    def __init__(self, root: Path):
        self.master = RedisServer(root / "master")
        self.replica = RedisServer(root / "replica")
        self.sentinel_port = embedded_redis.free_port()
        self.root = root
        self.sentinel: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"sentinel://127.0.0.1:{self.sentinel_port}/0"

    def start(self) -> None:
        for server in (self.master, self.replica):
            server.directory.mkdir(parents=True)
        self.master.start()
        args = embedded_redis.server_args(self.replica.directory, self.replica.port)
        self.replica.process = subprocess.Popen(
            [*args, "--replicaof", "127.0.0.1", str(self.master.port)], stdout=subprocess.DEVNULL
        )
        embedded_redis.wait_ready(self.replica.url)
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
        wait_for(lambda: self.master_port() == self.master.port and self.replica_synced())

    def master_port(self) -> int | None:
        sentinel = redis_lib.Redis(port=self.sentinel_port, socket_timeout=2)
        found = sentinel.execute_command("SENTINEL", "get-master-addr-by-name", MASTER_NAME)
        return int(found[1]) if found else None

    def replica_synced(self) -> bool:
        """The replica is linked and has every byte the master has written."""
        info = redis_lib.Redis.from_url(self.master.url).info("replication")
        replica = info.get("slave0")
        return bool(replica) and replica["offset"] == info["master_repl_offset"]

    def stop(self) -> None:
        if self.sentinel is not None:
            self.sentinel.terminate()
            self.sentinel.wait(timeout=10)
        for server in (self.replica, self.master):
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


def test_a_sentinel_failover_loses_no_accepted_webhook(topology, sandbox, tmp_path, monkeypatch):
    from webhooks import create_app

    for rid in TARGETS:
        sandbox.http.put(
            f"/perfexcrm/_sim/records/{rid}", json={**sandbox.record("perfexcrm", 7), "userid": rid}
        ).raise_for_status()
    monkeypatch.setenv("SWITCHBOARD_SENTINEL_MASTER", MASTER_NAME)
    monkeypatch.setenv("SANDBOX_URL", sandbox.url)
    env = worker_env(
        topology.url,
        sandbox.url,
        SWITCHBOARD_SENTINEL_MASTER=MASTER_NAME,
        SWITCHBOARD_RUN_LEASE="5",
        SWITCHBOARD_QUEUE_LEASE="10",
    )
    worker = start_worker(env, "wfail", log=tmp_path / "worker.log")
    client = create_app(make_settings(topology.url)).test_client()
    store = connect(topology.url)
    codes: list[int] = []
    sent: dict[str, str] = {}  # event id -> target

    def all_applied() -> bool:
        queue = Queue(store)
        for event_id in sent:
            _, task_ids = queue.load_event("stripe", event_id)  # type: ignore[misc]
            record = queue.load_task(task_ids[0])
            if record is None or record.state not in ("applied", "stale"):
                return False
        return True

    try:
        wait_for(lambda: store.hlen("sb:heartbeats") > 0)
        for i in range(30):  # before the failover
            sent[f"evt_fo_a{i}"] = TARGETS[i % len(TARGETS)]
            send_until_accepted(client, f"evt_fo_a{i}", TARGETS[i % len(TARGETS)], 100 + i, codes)
        # no vendor call in flight at the kill: a call whose completion the dead master
        # never recorded is made again (at least once), which would blur the count below
        wait_for(all_applied, timeout=60)
        wait_for(topology.replica_synced)
        topology.master.stop("kill")
        for i in range(30):  # during and after it: retried until a master takes them
            sent[f"evt_fo_b{i}"] = TARGETS[i % len(TARGETS)]
            send_until_accepted(client, f"evt_fo_b{i}", TARGETS[i % len(TARGETS)], 200 + i, codes)
        wait_for(lambda: topology.master_port() == topology.replica.port, timeout=30)
        wait_for(all_applied, timeout=60)
        assert worker.poll() is None, "the worker died in the failover"
    finally:
        worker.terminate()
        worker.wait(timeout=20)
    assert 500 not in codes
    puts = [e for e in sandbox.log("perfexcrm") if e["method"] == "PUT"]
    vats = [e["body"]["vat"] for e in puts]
    # each event reached the vendor once at most (no duplicate writes of one event),
    # and each target ends with its newest value
    assert len(vats) == len(set(vats))
    for i, target in enumerate(TARGETS):
        newest = max(200 + j for j in range(30) if j % len(TARGETS) == i)
        assert sandbox.record("perfexcrm", target)["vat"] == f"paid {newest / 100}"
