"""SWITCHBOARD_MIN_REPLICAS in the worker: a task's outcome counts as recorded only once a
replica holds it, whichever connection asks (worker.steps, worker.replication).

A real master and replica; the replica is stopped (SIGSTOP) to hold replication back.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
import redis as redis_lib

from tests.helpers import RedisServer, wait_for
from worker.model import Event, UpdateTask
from worker.queue import Queue
from worker.replication import NotReplicated
from worker.steps import Steps


def _complete(steps: Steps, task: UpdateTask) -> bool:
    return steps.complete(
        task.id, 1, "perfex", task.target, "applied", [], [], "tok", task.occurred_at, ["vat"],
        f"sb:event:{task.source}:{task.event_id}",
    )  # fmt: skip


def test_an_outcome_is_recorded_only_once_a_replica_holds_it(tmp_path):
    master, replica = RedisServer(tmp_path / "m"), RedisServer(tmp_path / "r")
    master.start()
    replica.start(replica_of=master)
    try:
        client = redis_lib.Redis.from_url(master.url)
        now = time.time()
        task = UpdateTask(
            "stripe", "evt_repl", "payment_intent.succeeded", "payment-activates-crm", 0,
            "perfex", "update_customer", "7", {"vat": "x"}, now,
        )  # fmt: skip
        event = Event("stripe", "evt_repl", task.event_type, now, now, {}, {})
        assert Queue(client).store_event(event, [task])
        steps = Steps(client, min_replicas=1, replica_timeout=0.3)
        assert steps.begin(task.id, 1, "perfex", "7", ["vat"], now + 60, "tok", 60).status == "ok"
        wait_for(master.replica_synced)
        assert replica.process is not None
        os.kill(replica.process.pid, signal.SIGSTOP)
        try:
            with pytest.raises(NotReplicated):
                _complete(steps, task)  # applied on the master, unconfirmed
            assert client.hget(f"sb:task:{task.id}", "state") == b"applied"
            # the retry on another connection finds it done and writes nothing: it must
            # still wait for the replica, or it would "confirm" what no replica has
            other = Steps(redis_lib.Redis.from_url(master.url), 1, 0.3)
            with pytest.raises(NotReplicated):
                _complete(other, task)
        finally:
            os.kill(replica.process.pid, signal.SIGCONT)
        client.script_flush()  # as after a Redis restart: the script is loaded again
        assert _complete(other, task) is False  # done before; now confirmed
        replica_client = redis_lib.Redis.from_url(replica.url)
        assert replica_client.hget(f"sb:task:{task.id}", "state") == b"applied"
        assert _complete(Steps(client), task) is False  # without MIN_REPLICAS: no WAIT
    finally:
        replica.stop()
        master.stop()


def test_an_ops_replay_is_answered_only_once_a_replica_has_it(tmp_path, monkeypatch):
    """The API's replay (and the CLI's, the same service) confirms its writes as ingest
    does: 503 ``not_replicated`` while the replica is stopped; pressing again is safe."""
    from config.loader import load_config
    from tests.helpers import TEST_CONFIG, make_settings
    from tests.ops.support import OPS, synthetic_dead_letter
    from webhooks import create_app

    monkeypatch.setenv("SANDBOX_URL", "http://127.0.0.1:9")
    master, replica = RedisServer(tmp_path / "m"), RedisServer(tmp_path / "r")
    master.start()
    replica.start(replica_of=master)
    try:
        client = redis_lib.Redis.from_url(master.url)
        entry = synthetic_dead_letter(client, 1, time.time())
        other = synthetic_dead_letter(client, 2, time.time())
        third = synthetic_dead_letter(client, 3, time.time())
        settings = make_settings(master.url, min_replicas=1, replica_timeout=0.3)
        http = create_app(settings, load_config(TEST_CONFIG)).test_client()
        csrf = _page_sign_in(http)
        wait_for(master.replica_synced)
        assert replica.process is not None
        os.kill(replica.process.pid, signal.SIGSTOP)
        try:
            response = http.post(f"/ops/dead-letters/{entry}/replay", headers=OPS)
            assert response.status_code == 503
            assert response.get_json()["error"]["code"] == "not_replicated"
            done = _cli(master.url, "replay", entry)  # the CLI says so too, and exits 1
            assert done.exit_code == 1
            assert "replica(s) confirmed" in done.output and "run it again" in done.output
            gone = _cli(master.url, "discard", other)  # so does a discard
            assert gone.exit_code == 1
            assert "replica(s) confirmed" in gone.output and "run it again" in gone.output
            page = http.post(f"/ops/entry/{third}/discard", data={"csrf_token": csrf})
            # the page's button: a page saying so (it was the API's raw JSON 503)
            assert (page.status_code, page.mimetype) == (503, "text/html")
            assert "replica(s) confirmed" in page.get_data(as_text=True)
            assert "press again" in page.get_data(as_text=True)
        finally:
            os.kill(replica.process.pid, signal.SIGCONT)
        response = http.post(f"/ops/dead-letters/{entry}/replay", headers=OPS)
        assert response.status_code == 202
        assert response.get_json()["status"] == "already_replaying"  # the first one landed
    finally:
        replica.stop()
        master.stop()


def _page_sign_in(http) -> str:
    import re

    login = http.get("/ops/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', login)
    assert csrf is not None
    form = {"token": "test-ops-token", "csrf_token": csrf[1]}
    assert http.post("/ops/login", data=form).status_code == 302
    signed_in = re.search(r'name="csrf_token" value="([^"]+)"', http.get("/ops/").text)
    assert signed_in is not None
    return signed_in[1]


def _cli(redis_url: str, command: str, entry: str):
    from click.testing import CliRunner

    from tests.helpers import TEST_CONFIG
    from webhooks.cli import main

    env = {
        "REDIS_URL": redis_url,
        "SWITCHBOARD_CONFIG": str(TEST_CONFIG),
        "SWITCHBOARD_MIN_REPLICAS": "1",
        "SWITCHBOARD_REPLICA_TIMEOUT": "0.3",
    }
    return CliRunner().invoke(main, ["dlq", command, entry], env=env, catch_exceptions=False)


def test_a_webhook_stored_but_not_confirmed_says_so_in_its_log_line(tmp_path, monkeypatch, caplog):
    """A 503 not_replicated after the master stored the event: the sender retries (and
    gets `duplicate`), and the log says the event was stored, with its tasks."""
    import logging

    from config.loader import load_config
    from tests.helpers import TEST_CONFIG, make_settings, stripe_headers, with_changes
    from webhooks import create_app

    monkeypatch.setenv("SANDBOX_URL", "http://127.0.0.1:9")
    master, replica = RedisServer(tmp_path / "m"), RedisServer(tmp_path / "r")
    master.start()
    replica.start(replica_of=master)
    try:
        settings = make_settings(master.url, min_replicas=1, replica_timeout=0.3)
        http = create_app(settings, load_config(TEST_CONFIG)).test_client()
        wait_for(master.replica_synced)
        assert replica.process is not None
        os.kill(replica.process.pid, signal.SIGSTOP)
        body = with_changes("stripe/payment_intent.succeeded.json", id="evt_unconfirmed")
        try:
            with caplog.at_level(logging.INFO, logger="switchboard.web"):
                posted = http.post("/webhooks/stripe", data=body, headers=stripe_headers(body))
        finally:
            os.kill(replica.process.pid, signal.SIGCONT)
        assert posted.status_code == 503
        said = "webhook stored, not confirmed by replicas"
        [line] = [r.sb for r in caplog.records if r.getMessage() == said]
        assert line["event_id"] == "evt_unconfirmed" and len(line["task_ids"]) == 1
        again = http.post("/webhooks/stripe", data=body, headers=stripe_headers(body))
        assert (again.status_code, again.get_json()["status"]) == (200, "duplicate")
    finally:
        replica.stop()
        master.stop()
