"""Two web processes (gunicorn) and three workers (Celery) on one Redis, as on many hosts.

Every event is sent twice, to different web processes, in an order that delivers older
events after newer ones for the same target. Every event must be applied once per
action, each target must end with its newest event's values and never see an older
value after a newer one, and the vendor rate limit must hold across all workers.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import redis as redis_lib

from config import embedded_redis
from tests.helpers import ROOT, RedisServer, hmac_headers, start_worker, wait_for, worker_env

SCALE_CONFIG = ROOT / "tests" / "config" / "switchboard.scale.yaml"
TARGETS = [str(t) for t in range(101, 111)]
PER_TARGET = 15
RATE = 25  # matches rate_limit: "25/s" in the scale config


def start_web(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "1",
        "--worker-class",
        "gthread",
        "--threads",
        "4",
        "webhooks.wsgi:app",
    ]
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log.open("wb")
    )


def events() -> list[dict]:
    base = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    out = []
    for target in TARGETS:
        for seq in range(PER_TARGET):
            at = base + timedelta(seconds=seq)
            out.append(
                {
                    "event_id": f"scale-{target}-{seq}",
                    "event": "address.changed",
                    "at": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "customer": {"perfex_id": int(target)},
                    "address": {"city": f"city-{seq:02d}", "zip": f"Z{seq:02d}"},
                }
            )
    return out


@pytest.fixture
def cluster(sandbox, tmp_path):
    server = RedisServer(tmp_path / "redis")
    (tmp_path / "redis").mkdir()
    server.start()
    env = worker_env(server.url, sandbox.url, SWITCHBOARD_CONFIG=str(SCALE_CONFIG))
    ports = [embedded_redis.free_port(), embedded_redis.free_port()]
    processes = [start_web(env, port, tmp_path / f"web{i}.log") for i, port in enumerate(ports)]
    processes += [start_worker(env, name=f"scale{i}", concurrency=4) for i in range(3)]
    client = redis_lib.Redis.from_url(server.url)
    try:
        for port in ports:
            wait_for(lambda p=port: _up(p), timeout=30)
        wait_for(lambda: client.hlen("sb:heartbeats") == 3, timeout=30)
        yield [f"http://127.0.0.1:{p}" for p in ports], client
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        server.stop()


def _up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_two_webs_three_workers_apply_each_event_once_in_order_within_the_rate_limit(
    cluster, sandbox
):
    webs, client = cluster
    for target in TARGETS:  # seed the simulator with the customers we update
        sandbox.http.put(
            f"/perfexcrm/_sim/records/{target}",
            json={**sandbox.record("perfexcrm", 7), "userid": target, "city": "start"},
        ).raise_for_status()
    sent = events()
    deliveries = [(e, webs[0]) for e in sent] + [(e, webs[1]) for e in sent]
    random.Random(7).shuffle(deliveries)  # older events often arrive after newer ones

    http = httpx.Client(timeout=10)

    def deliver(item: tuple[dict, str]) -> tuple[str, int, str]:
        event, web = item
        body = json.dumps(event).encode()
        r = http.post(f"{web}/webhooks/portal", content=body, headers=hmac_headers(body))
        return event["event_id"], r.status_code, r.json().get("status", "")

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(deliver, deliveries))
    http.close()

    by_status: dict[str, int] = {}
    for _, code, status in answers:
        by_status[f"{code} {status}"] = by_status.get(f"{code} {status}", 0) + 1
    assert by_status == {"202 accepted": len(sent), "200 duplicate": len(sent)}

    wait_for(lambda: client.zcard("sb:waiting") == 0, timeout=90, interval=0.2)
    states = {}
    for event in sent:
        [task_id] = json.loads(client.hget(f"sb:event:portal:{event['event_id']}", "tasks"))
        states[event["event_id"]] = client.hget(f"sb:task:{task_id}", "state").decode()
    assert set(states.values()) <= {"applied", "stale"}, states

    puts = [e for e in sandbox.log("perfexcrm") if e["method"] == "PUT"]
    applied = [k for k, v in states.items() if v == "applied"]
    assert len(puts) == len(applied)  # once per action: no task reached the vendor twice

    for target in TARGETS:
        cities = [e["body"]["city"] for e in puts if e["path"].endswith(f"/customers/{target}")]
        assert cities == sorted(cities), f"target {target} saw an older value after a newer"
        assert sandbox.record("perfexcrm", target)["city"] == f"city-{PER_TARGET - 1:02d}"

    times = sorted(e["at"] for e in puts)
    # the sliding window books at most RATE calls in any second; the times here are when
    # the simulator saw them (scheduling jitter after booking), so the bound is looser
    for i in range(len(times)):
        for j in range(i, len(times)):
            allowed = RATE + (times[j] - times[i]) * RATE + 2  # 2: clock/network slack
            assert j - i + 1 <= allowed, f"{j - i + 1} calls in {times[j] - times[i]:.2f}s"
    if len(times) > 2 * RATE:
        span = times[-1] - times[0]
        assert (len(times) - RATE) / span <= RATE * 1.1
