"""/metrics and the JSON logs answer "what happened to webhook X" across web and worker."""

from __future__ import annotations

import json
import logging
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from config.logs import JsonFormatter, configure_logging
from tests.helpers import (
    ROOT,
    start_worker,
    stripe_headers,
    wait_for,
    with_changes,
    worker_env,
)
from worker import keys
from worker import metrics as wm
from worker.queue import Queue


@pytest.fixture(autouse=True)
def _no_counts_from_earlier_tests():
    """Counters are buffered per process: flush what earlier tests left, before the
    ``redis`` fixture clears the sb:* keys."""
    wm.BUFFER.flush()


def scrape(client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    out = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def post(client, body: bytes):
    return client.post("/webhooks/stripe", data=body, headers=stripe_headers(body))


def states(redis, event_id: str) -> list[str]:
    _, ids = Queue(redis).load_event("stripe", event_id)  # type: ignore[misc]
    return [Queue(redis).load_task(t).state for t in ids]  # type: ignore[union-attr]


def test_metrics_count_ingest_outcomes_by_source_and_reason(private_client):
    client = private_client
    body = with_changes("stripe/payment_intent.succeeded.json", id="evt_m_1")
    assert post(client, body).status_code == 202
    assert post(client, body).status_code == 200  # duplicate
    ignored = with_changes("stripe/charge.succeeded.json", id="evt_m_ign")
    assert post(client, ignored).status_code == 200
    bad = client.post("/webhooks/stripe", data=body, headers={"Stripe-Signature": "t=1,v1=x"})
    assert bad.status_code == 401
    assert client.post("/webhooks/nope", data=b"{}").status_code == 404
    m = scrape(client)
    src = (("source", "stripe"),)
    assert m[("switchboard_webhooks_received_total", src)] == 4
    assert m[("switchboard_webhooks_accepted_total", src)] == 1
    assert m[("switchboard_webhooks_duplicate_total", src)] == 1
    assert m[("switchboard_webhooks_ignored_total", src)] == 1
    reason = bad.get_json()["error"]["code"]
    assert m[("switchboard_webhooks_rejected_total", (("reason", reason), *src))] == 1
    unknown = (("reason", "unknown_source"), ("source", "(unknown)"))
    assert m[("switchboard_webhooks_rejected_total", unknown)] == 1
    assert m[("switchboard_queue_tasks_waiting", ())] == 1
    assert m[("switchboard_queue_oldest_task_age_seconds", ())] >= 0
    assert m[("switchboard_dead_letters_stored", ())] == 0
    assert m[("switchboard_up", ())] == 1
    closed = (("state", "closed"), ("vendor", "perfex"))
    assert m[("switchboard_circuit_state", closed)] == 1


def test_circuit_state_is_read_from_the_breaker_hash(client, redis):
    redis.hset("sb:circuit:perfex", "state", "open")
    m = scrape(client)
    assert m[("switchboard_circuit_state", (("state", "open"), ("vendor", "perfex")))] == 1
    assert m[("switchboard_circuit_state", (("state", "closed"), ("vendor", "perfex")))] == 0


def test_worker_outcomes_and_vendor_latency_reach_metrics(client, worker, sandbox, redis):
    sandbox.knobs("perfexcrm", fail_next=1, fail_status=503)
    body = with_changes("stripe/payment_intent.succeeded.json", id="evt_m_worker")
    assert post(client, body).status_code == 202
    wait_for(lambda: states(redis, "evt_m_worker") == ["applied"])
    m = scrape(client)
    labels = (("op", "update_customer"), ("outcome", "applied"), ("vendor", "perfex"))
    wait_for(lambda: scrape(client).get(("switchboard_tasks_total", labels)) == 1)
    m = scrape(client)
    retried = (("op", "update_customer"), ("outcome", "retrying"), ("vendor", "perfex"))
    assert m[("switchboard_tasks_total", retried)] == 1
    ok = (("op", "update_customer"), ("status", "2xx"), ("vendor", "perfex"))
    assert m[("switchboard_vendor_call_seconds_count", ok)] >= 1
    assert m[("switchboard_vendor_call_seconds_bucket", (("le", "+Inf"), *ok))] >= 1
    failed = (("op", "update_customer"), ("status", "5xx"), ("vendor", "perfex"))
    assert m[("switchboard_vendor_call_seconds_count", failed)] == 1
    assert m[("switchboard_queue_tasks_waiting", ())] == 0
    assert m[("switchboard_worker_seconds_since_heartbeat", ())] < 60


def test_dead_letters_are_counted_by_vendor_and_code(client, worker, sandbox, redis):
    sandbox.knobs("perfexcrm", fail_next=10, fail_status=500)
    body = with_changes("stripe/payment_intent.succeeded.json", id="evt_m_dead")
    assert post(client, body).status_code == 202
    wait_for(lambda: states(redis, "evt_m_dead") == ["dead"])
    wait_for(lambda: scrape(client).get(("switchboard_dead_letters_stored", ())) == 1)
    labels = (("code", "exhausted"), ("vendor", "perfex"))
    wait_for(lambda: scrape(client).get(("switchboard_dead_letters_total", labels)) == 1)


def test_record_task_logs_one_json_line_with_the_story(redis, caplog):
    from worker.model import UpdateTask

    task = UpdateTask(
        "stripe",
        "evt_log",
        "x.y",
        "r1",
        0,
        "perfex",
        "update_customer",
        "7",
        {"city": "Paris"},
        1.0,
    )
    redis.hset(f"sb:task:{task.id}", mapping={"task": task.to_json(), "attempts": "[]"})
    with caplog.at_level(logging.INFO, logger="switchboard"):
        wm.record_task(redis, task.id, 1, "applied", 0.0123, [("perfex", "2xx", 0.01)])
    [record] = [r for r in caplog.records if r.name == "switchboard.worker"]
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "task applied"
    for key, value in {
        "event_id": "evt_log",
        "source": "stripe",
        "rule": "r1",
        "task_id": task.id,
        "vendor": "perfex",
        "op": "update_customer",
        "attempt": 0,
        "outcome": "applied",
        "duration_ms": 12.3,
    }.items():
        assert line[key] == value
    assert "Paris" not in json.dumps(line)  # field values (payload data) are not logged


def test_json_formatter_redacts_secrets():
    record = logging.LogRecord("switchboard.web", logging.INFO, "", 0, "token s3cr3t", (), None)
    record.sb = {"detail": "Bearer s3cr3t"}
    line = json.loads(
        JsonFormatter(__import__("worker.redact").redact.Redactor(["s3cr3t"])).format(record)
    )
    assert "s3cr3t" not in json.dumps(line)
    assert line["detail"] == "Bearer [redacted]"


def test_json_formatter_redacts_secrets_that_json_escapes():
    secret = 'pa"ss\\wörd'  # a quote, a backslash and a non-ASCII letter
    record = logging.LogRecord("switchboard.web", logging.INFO, "", 0, f"x {secret}", (), None)
    record.sb = {"detail": f"auth={secret};", secret: "as a key"}
    text = JsonFormatter(__import__("worker.redact").redact.Redactor([secret])).format(record)
    line = json.loads(text)
    assert secret not in json.dumps(line, ensure_ascii=False)
    assert line["msg"] == "x [redacted]"
    assert line["detail"] == "auth=[redacted];"
    assert line["[redacted]"] == "as a key"


def test_grep_event_id_follows_the_webhook_across_web_and_worker_logs(
    sandbox, tmp_path, monkeypatch
):
    import io

    import redis as redis_lib

    from config.loader import load_config
    from tests.helpers import TEST_CONFIG, RedisServer, make_settings
    from webhooks import create_app

    monkeypatch.setenv("SANDBOX_URL", sandbox.url)
    # a Redis of its own: the session's worker must not take this event
    redis_server = RedisServer(tmp_path)
    client = create_app(make_settings(redis_server.url), load_config(TEST_CONFIG)).test_client()
    redis_server.start()  # after what may fail: nothing below leaves it running
    redis = redis_lib.Redis.from_url(redis_server.url)
    web_log = io.StringIO()
    handler = configure_logging(["whsec_test_secret_for_switchboard"], stream=web_log)
    worker_log = tmp_path / "worker.log"
    env = worker_env(redis_server.url, sandbox.url)
    process = start_worker(env, name="logw", concurrency=2, log=worker_log)
    try:
        body = with_changes("stripe/payment_intent.succeeded.json", id="evt_grep_me")
        assert post(client, body).status_code == 202
        wait_for(lambda: states(redis, "evt_grep_me") == ["applied"], timeout=30)
        # the sender retries it signed with an old secret; then ops replay it
        forged = client.post(
            "/webhooks/stripe", data=body, headers=stripe_headers(body, secret="whsec_old")
        )
        assert forged.status_code == 401
        ops = {"Authorization": "Bearer test-ops-token"}
        replayed = client.post("/ops/events/stripe/evt_grep_me/replay", headers=ops)
        assert replayed.status_code == 202, replayed.data
        wait_for(lambda: states(redis, "evt_grep_me") == ["applied", "applied"], timeout=30)
        wait_for(lambda: worker_log.read_text().count("evt_grep_me") >= 2, timeout=10)
    finally:
        process.terminate()
        process.wait(timeout=15)
        beats = redis.hkeys("sb:heartbeats")
        logging.getLogger().removeHandler(handler)
        redis_server.stop()
    # it stopped cleanly, holding nothing: no heartbeat left (its /metrics series stayed
    # for a day, a worker seemingly silent)
    assert beats == []
    lines = [
        json.loads(line)
        for line in web_log.getvalue().splitlines() + worker_log.read_text().splitlines()
        if "evt_grep_me" in line
    ]
    web = [x for x in lines if x["logger"] == "switchboard.web"]
    work = [x for x in lines if x["logger"] == "switchboard.worker"]
    ops = [x for x in lines if x["logger"] == "switchboard.ops"]
    assert [x["msg"] for x in web] == ["webhook accepted", "webhook rejected"]
    assert web[0]["rules"] == ["payment-activates-crm"]
    task_id = web[0]["tasks"][0]["task_id"]
    refused = web[1]  # found by the id it claims, though its signature was not ours
    assert (refused["level"], refused["reason"]) == ("warning", "invalid_signature")
    assert refused["claimed_event_id"] == "evt_grep_me" and refused["remote"]
    [replay] = ops  # what ops did to it, and who
    assert (replay["msg"], replay["who"]) == ("ops event_replay", "ops")
    assert [x["outcome"] for x in work] == ["applied", "applied"]
    assert work[0]["task_id"] == task_id and work[0]["vendor"] == "perfex"
    assert work[1]["task_id"] == replay["tasks"][0] != task_id  # the replay's own task
    assert work[0]["attempt"] == 1 and work[0]["duration_ms"] > 0
    assert "whsec_test_secret_for_switchboard" not in web_log.getvalue()


def test_a_scrape_never_scans_the_keyspace(client, redis):
    # /metrics is scraped every few seconds; a SCAN's cost grows with every event stored
    redis.set("sb:circuit:gone-vendor", "x")  # what a scan for circuits would have found
    redis.config_resetstat()
    scrape(client)
    assert "cmdstat_scan" not in redis.info("commandstats")
    redis.delete("sb:circuit:gone-vendor")


def test_a_prefork_pool_process_recycled_after_each_task_keeps_its_counts(
    private_client, private_db, redis_server, sandbox, tmp_path
):
    from webhooks.supervisor import worker_command

    command = worker_command(2, "prefork")
    command[command.index("threads")] = "prefork"
    command += ["--max-tasks-per-child", "1"]  # each pool process ends with os._exit
    env = worker_env(redis_server.url.rsplit("/", 1)[0] + "/7", sandbox.url)
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
    try:
        for n in range(3):
            body = with_changes("stripe/payment_intent.succeeded.json", id=f"evt_prefork_{n}")
            assert post(private_client, body).status_code == 202
        wait_for(lambda: private_db.zcard(keys.WAITING) == 0, timeout=60)
        applied = wm.field("perfex", "update_customer", "applied")
        wait_for(lambda: int(private_db.hget(wm.TASKS, applied) or 0) == 3, timeout=10)
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def test_a_deeply_nested_body_refused_by_its_signature_is_a_401_not_a_500(client, redis):
    body = b'{"a":' + b"[" * 20000 + b"]" * 20000 + b"}"  # json.loads: RecursionError
    refused = client.post(
        "/webhooks/stripe", data=body, headers=stripe_headers(body, secret="whsec_wrong")
    )
    assert refused.status_code == 401, refused.data
