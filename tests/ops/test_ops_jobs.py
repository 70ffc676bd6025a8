"""Bulk-replay jobs survive their process: a job whose runner is SIGKILLed mid-way shows
``stalled`` once its lease lapses, and another process resumes it after the last entry
done, so each entry is replayed once."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import redis as redis_lib

from config.loader import load_config
from tests.helpers import ROOT, TEST_CONFIG, wait_for
from tests.ops.support import synthetic_dead_letter
from webhooks.ops import jobs
from webhooks.ops.service import ConflictError, Ops
from webhooks.rules import RuleSet
from worker.queue import Queue

ENTRIES = 30

RUNNER = textwrap.dedent(
    """
    import sys, time
    import redis
    from config.loader import load_config
    from webhooks.ops import jobs
    from webhooks.ops.service import Ops
    from webhooks.rules import RuleSet

    jobs.LEASE_SECONDS = 1.0  # a dead runner's lease lapses fast in this test
    url, job_id, config = sys.argv[1:]
    ops = Ops(redis.Redis.from_url(url), RuleSet(load_config(config)))
    ops.run_bulk_replay(job_id, progress=lambda job: time.sleep(0.05))
    """
)


@pytest.fixture
def ops(private_db, sandbox, monkeypatch) -> Ops:
    monkeypatch.setenv("SANDBOX_URL", sandbox.url)
    monkeypatch.setattr(jobs, "STALLED_AFTER", 0.5)
    return Ops(private_db, RuleSet(load_config(TEST_CONFIG)))


def test_a_job_whose_runner_is_killed_is_resumed_where_it_stopped(ops, private_db, redis_server):
    ids = [synthetic_dead_letter(private_db, n, time.time() - n) for n in range(ENTRIES)]
    job = ops.start_bulk_replay({"vendor": "perfex"}, who="test")
    url = redis_server.url.rsplit("/", 1)[0] + "/7"
    runner = subprocess.Popen(
        [sys.executable, "-c", RUNNER, url, job["id"], str(TEST_CONFIG)], cwd=ROOT
    )
    try:
        wait_for(lambda: ops.job(job["id"])["done"] >= 10)
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=10)
    finally:
        runner.kill()
    cut = ops.job(job["id"])
    assert cut["state"] == "running" and 10 <= cut["done"] < ENTRIES  # its lease still holds
    wait_for(lambda: ops.job(job["id"])["state"] == "stalled", timeout=10)

    assert ops.resume_stalled() == [job["id"]]
    assert ops.resume_stalled() == []  # running now: not taken twice
    with pytest.raises(ConflictError):
        ops.run_bulk_replay(job["id"])
    done = wait_for(lambda: (j := ops.job(job["id"]))["state"] == "done" and j, timeout=30)
    assert (done["total"], done["done"], done["resumed"], done["failed"]) == (
        ENTRIES,
        ENTRIES,
        1,
        0,
    )
    # each entry replayed once; the one cut off mid-replay, if any, is found replaying
    assert done["queued"] + done["already_replaying"] == ENTRIES
    assert done["already_replaying"] <= 1
    queue = Queue(private_db)
    assert all(queue.load_task(i).state == "queued" for i in ids)  # type: ignore[union-attr]
    assert not private_db.sismember(jobs.ACTIVE, job["id"])


def test_a_finished_or_expired_job_is_not_resumed(ops, private_db):
    synthetic_dead_letter(private_db, 1, time.time())
    job = ops.start_bulk_replay({"vendor": "perfex"}, who="test")
    assert ops.run_bulk_replay(job["id"])["state"] == "done"
    private_db.sadd(jobs.ACTIVE, "gone")  # a job whose record expired
    assert ops.resume_stalled() == []
    assert private_db.smembers(jobs.ACTIVE) == set()


def test_the_resumer_thread_keeps_going_through_redis_errors():
    calls: list[int] = []
    went_on = threading.Event()

    def resume() -> list[str]:
        calls.append(1)
        if len(calls) == 1:
            raise redis_lib.ConnectionError("restarting")
        went_on.set()
        return []

    resumer = jobs.JobResumer(resume, every=0.01)
    resumer.start()
    assert went_on.wait(5)
    resumer.stopped.set()
    resumer.join(5)
    assert not resumer.is_alive()
