"""Bulk-replay jobs survive their process: a job whose runner is SIGKILLed mid-way shows
``stalled`` once its lease lapses, and another process resumes it after the last entry
done, so each entry is replayed once."""

from __future__ import annotations

import os
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


def _runner(redis_server, job_id: str) -> subprocess.Popen[bytes]:
    """Run the job in a process of its own (RUNNER), on database 7."""
    url = redis_server.url.rsplit("/", 1)[0] + "/7"
    return subprocess.Popen([sys.executable, "-c", RUNNER, url, job_id, str(TEST_CONFIG)], cwd=ROOT)


def _kill_runner_after(ops: Ops, redis_server, job_id: str, done: int) -> None:
    """Run the job in its own process and SIGKILL it once ``done`` entries are done."""
    runner = _runner(redis_server, job_id)
    try:
        wait_for(lambda: ops.job(job_id)["done"] >= done)
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=10)
    finally:
        runner.kill()


def test_a_job_whose_runner_is_killed_is_resumed_where_it_stopped(ops, private_db, redis_server):
    ids = [synthetic_dead_letter(private_db, n, time.time() - n) for n in range(ENTRIES)]
    job = ops.start_bulk_replay({"vendor": "perfex"}, who="test")
    _kill_runner_after(ops, redis_server, job["id"], done=10)
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


def _replaying(private_db, entry_id: str) -> bool:
    return private_db.hget(f"sb:dl:{entry_id}", "replaying") not in (b"0", None)


def test_a_running_job_cancelled_elsewhere_stops_after_the_entry_at_hand(
    ops, private_db, redis_server
):
    ids = [synthetic_dead_letter(private_db, n, time.time() - n) for n in range(ENTRIES)]
    job = ops.start_bulk_replay({"vendor": "perfex"}, who="test")
    runner = _runner(redis_server, job["id"])
    try:
        wait_for(lambda: ops.job(job["id"])["done"] >= 5)
        asked = ops.cancel_bulk_replay(job["id"], who="night-op")
        assert asked["state"] in ("cancelling", "cancelled")
        assert runner.wait(timeout=20) == 0  # it stopped by itself
    finally:
        runner.kill()
    ended = ops.job(job["id"])
    assert ended["state"] == "cancelled" and 5 <= ended["done"] < ENTRIES
    assert ended["queued"] == ended["done"]
    # newest first: the entries done were replayed, none after them
    assert [_replaying(private_db, i) for i in ids] == [n < ended["done"] for n in range(ENTRIES)]
    assert not private_db.sismember(jobs.ACTIVE, job["id"])
    assert ops.resume_stalled() == []
    [record] = ops.audit(action="bulk_replay_cancel")
    assert (record["id"], record["who"]) == (job["id"], "night-op")
    with pytest.raises(ConflictError):
        ops.cancel_bulk_replay(job["id"], who="night-op")  # it has ended


def test_a_stalled_job_cancelled_is_never_resumed(ops, private_db, redis_server):
    for n in range(ENTRIES):
        synthetic_dead_letter(private_db, n, time.time() - n)
    job = ops.start_bulk_replay({"vendor": "perfex"}, who="test")
    _kill_runner_after(ops, redis_server, job["id"], done=5)
    wait_for(lambda: ops.job(job["id"])["state"] == "stalled", timeout=10)
    assert ops.cancel_bulk_replay(job["id"], who="night-op")["state"] == "cancelled"
    assert ops.resume_stalled() == []
    assert ops.job(job["id"])["state"] == "cancelled"


def _cli_bulk_replay_running(ops, private_db, redis_server, sandbox):
    """A ``dlq replay --vendor perfex`` of 1,500 entries, in its own process, and its job id
    once 20 are done (enough that it is still going when stopped)."""
    for n in range(1500):
        synthetic_dead_letter(private_db, n, time.time() - n)
    env = {
        **os.environ,
        "REDIS_URL": redis_server.url.rsplit("/", 1)[0] + "/7",
        "SWITCHBOARD_CONFIG": str(TEST_CONFIG),
        "SANDBOX_URL": sandbox.url,
        "PYTHONPATH": str(ROOT),
    }
    command = [sys.executable, "-m", "webhooks.cli", "dlq", "replay", "--vendor", "perfex"]
    cli = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        [job_id] = [j.decode() for j in wait_for(lambda: private_db.smembers(jobs.ACTIVE))]
        wait_for(lambda: ops.job(job_id)["done"] >= 20, interval=0.005)
    except BaseException:
        cli.kill()
        raise
    return cli, job_id


def test_the_cli_cancels_the_job_it_runs_on_ctrl_c(ops, private_db, redis_server, sandbox):
    cli, job_id = _cli_bulk_replay_running(ops, private_db, redis_server, sandbox)
    try:
        cli.send_signal(signal.SIGINT)
        _, err = cli.communicate(timeout=30)
    finally:
        cli.kill()
    assert cli.returncode == 130, err
    assert f"job {job_id} cancelled by cli:" in err and "Traceback" not in err
    ended = ops.job(job_id)
    assert ended["state"] == "cancelled" and ended["done"] < 1500
    assert not private_db.sismember(jobs.ACTIVE, job_id)
    # it stopped after the entry at hand: every entry replayed is counted (the one the
    # interrupt landed in was replayed and audited, but not counted)
    replayed = [r for r in ops.audit(limit=1000, action="replay") if r.get("job") == job_id]
    assert ended["done"] == ended["queued"] == len(replayed)


def test_the_cli_says_when_someone_else_cancelled_its_bulk_replay(
    ops, private_db, redis_server, sandbox
):
    # it printed "7 of 1378 done" and exited 0, as if it had finished
    cli, job_id = _cli_bulk_replay_running(ops, private_db, redis_server, sandbox)
    try:
        ops.cancel_bulk_replay(job_id, who="night-op")
        out, err = cli.communicate(timeout=30)
    finally:
        cli.kill()
    assert cli.returncode == 1, (out, err)
    assert f"job {job_id} cancelled by night-op after" in err
    assert ops.job(job_id)["cancelled_by"] == "night-op"


def test_entries_gone_since_the_list_was_made_are_counted(ops, private_db):
    # the counts did not add up: done 1019 = queued 979 + nothing
    ids = [synthetic_dead_letter(private_db, n, time.time() - n) for n in range(3)]
    job = ops.start_bulk_replay({"vendor": "perfex"}, who="test")

    def discard_one(state: dict) -> None:
        if state["done"] == 0:  # the list is made; nothing replayed yet
            ops.discard(ids[2], who="night-op")

    ended = ops.run_bulk_replay(job["id"], discard_one)
    assert (ended["done"], ended["queued"], ended["gone"]) == (3, 2, 1)


def test_a_big_bulk_replay_does_not_push_discards_out_of_the_audit_log(
    ops, private_db, monkeypatch
):
    # the log kept its newest 10,000 records and a bulk replay wrote one per entry:
    # one big job erased every discard before it (and its own bulk_replay record)
    from worker import audit

    monkeypatch.setattr(audit, "AUDIT_KEEP", 5)
    discarded = synthetic_dead_letter(private_db, 100, time.time())
    ops.discard(discarded, who="alice")
    for n in range(8):
        synthetic_dead_letter(private_db, n, time.time())
    job = ops.start_bulk_replay({}, who="bob")
    ran = ops.run_bulk_replay(job["id"])
    assert ran["queued"] == 8, {k: ran[k] for k in ("total", "done", "failed", "errors")}
    log = ops.dead_letters.audit_log(limit=100)
    assert [(r["action"], r["who"]) for r in log if r["action"] != "replay"] == [
        ("bulk_replay", "bob"),
        ("discard", "alice"),
    ]
    replays = [r for r in log if r["action"] == "replay"]
    assert len(replays) == 8 and {r["job"] for r in replays} == {job["id"]}
    assert [r["at"] for r in log] == sorted((r["at"] for r in log), reverse=True)
    assert ops.dead_letters.audit_log(action="discard") == [log[-1]]


def test_a_runner_that_stalled_past_its_lease_does_not_write_over_the_job(ops, private_db):
    for n in range(3):
        synthetic_dead_letter(private_db, n, time.time() - n)
    job = ops.start_bulk_replay({"vendor": "perfex"}, who="test")
    other = Ops(private_db, ops.rules)
    taken_over: list[dict] = []

    def stall_once(seen: dict) -> None:  # runner A pauses after its first entry ...
        if seen["done"] == 1 and not taken_over:
            private_db.delete(jobs.runner_key(job["id"]))  # ... past its lease, and
            taken_over.append(other.run_bulk_replay(job["id"]))  # B runs the job to the end

    ops.run_bulk_replay(job["id"], progress=stall_once)  # A wakes up and carries on
    assert taken_over and taken_over[0]["state"] == "done"
    final = ops.job(job["id"])
    assert (final["state"], final["done"], final["total"]) == ("done", 3, 3)  # B's record
    assert not private_db.sismember(jobs.ACTIVE, job["id"])


def test_presses_of_replay_event_at_the_same_instant_queue_it_once(ops, private_db):
    import json

    from tests.helpers import with_changes
    from worker.model import Event

    queue = Queue(private_db)
    for trial in range(5):
        payload = json.loads(with_changes("stripe/payment_intent.succeeded.json"))
        event = Event("stripe", f"evt-twice-{trial}", payload["type"], 1.0, 1.0, payload, {})
        [task] = ops.rules.tasks_for(event)
        assert queue.store_event(event, [task])
        private_db.hset(f"sb:task:{task.id}", "state", "applied")  # finished: replayable
        start = threading.Barrier(6)
        outcomes: list[str] = []

        def press(
            start: threading.Barrier = start, outcomes: list[str] = outcomes, eid: str = event.id
        ) -> None:
            start.wait()
            try:
                ops.replay_event("stripe", eid, who="test")
                outcomes.append("queued")
            except ConflictError:
                outcomes.append("refused")

        presses = [threading.Thread(target=press) for _ in range(6)]
        for thread in presses:
            thread.start()
        for thread in presses:
            thread.join()
        _, task_ids = queue.load_event("stripe", task.event_id)  # type: ignore[misc]
        # one queues it; each other press waits for it, then finds its task queued
        assert sorted(outcomes) == ["queued"] + ["refused"] * 5, trial
        assert len(task_ids) == 2  # the first task and one replay's, never two replays'


def test_a_job_thread_stopped_by_redis_going_away_logs_why(tmp_path, monkeypatch, caplog):
    # it logged nothing and, Redis still away, died on its own bookkeeping: no trace of it
    from tests.helpers import RedisServer

    monkeypatch.setenv("SANDBOX_URL", "http://127.0.0.1:9")
    server = RedisServer(tmp_path / "r")
    server.start()
    client = redis_lib.Redis.from_url(server.url)
    ops = Ops(client, RuleSet(load_config(TEST_CONFIG)))
    synthetic_dead_letter(client, 1, time.time())
    job = ops.start_bulk_replay({"vendor": "perfex"}, who="test")
    server.stop()
    with caplog.at_level("INFO", logger="switchboard.ops"):
        ops.run_bulk_replay_in_thread(job["id"]).join(10)
    [stopped] = [r for r in caplog.records if r.getMessage().startswith("bulk replay")][:1]
    assert stopped.getMessage() == f"bulk replay {job['id']} stopped" and stopped.exc_info
    assert f"bulk replay {job['id']} not marked failed: redis unavailable" in caplog.messages
