"""The ops CLI (click's CliRunner) against real Redis and a real worker: same operations,
same JSON as the API, non-zero exit codes on failure."""

from __future__ import annotations

import json
import re
import time

import pytest
from click.testing import CliRunner

from tests.helpers import TEST_CONFIG, wait_for
from tests.ops.support import (
    OPS,
    dead_letter_via_pipeline,
    payment,
    post_stripe,
    state,
    synthetic_dead_letter,
    task_ids,
)
from webhooks.cli import main
from worker.deadletter import DeadLetters
from worker.model import UpdateTask


@pytest.fixture
def cli(redis_server, sandbox, redis):
    runner = CliRunner()
    env = {
        "REDIS_URL": redis_server.url,
        "SWITCHBOARD_CONFIG": str(TEST_CONFIG),
        "SANDBOX_URL": sandbox.url,
        "USER": "night-op",
    }

    def run(*args: str):
        return runner.invoke(main, list(args), env=env, catch_exceptions=False)

    return run


def test_dlq_list_json_equals_the_api_items(cli, client, redis):
    base = time.time() - 100
    for i in range(5):
        synthetic_dead_letter(redis, i, base + i)
    synthetic_dead_letter(redis, 9, base + 9, vendor="porta", code="exhausted")
    for query, args in [
        ("limit=3", ["--limit", "3"]),
        ("vendor=perfex", ["--vendor", "perfex"]),
        ("code=exhausted", ["--code", "exhausted"]),
        (f"since={base + 2}", ["--since", str(base + 2)]),
    ]:
        result = cli("dlq", "list", "--json", *args)
        assert result.exit_code == 0, result.output
        api = client.get(f"/ops/dead-letters?{query}", headers=OPS).get_json()
        assert json.loads(result.output) == api
    page1 = json.loads(cli("dlq", "list", "--json", "--limit", "4").output)
    page2 = cli("dlq", "list", "--json", "--limit", "4", "--cursor", page1["next_cursor"])
    ids = [i["id"] for i in page1["items"] + json.loads(page2.output)["items"]]
    assert len(ids) == len(set(ids)) == 6
    human = cli("dlq", "list", "--limit", "2")
    assert "more: --cursor" in human.output and "not_found" in human.output
    # why each died, without opening it; times say their zone (the page says UTC)
    assert "\n    Customer not found\n" in human.output
    assert re.search(r"\d\d:\d\d:\d\d UTC  not_found", human.output)


def test_dlq_show_human_and_json(cli, client, worker, sandbox, redis):
    sandbox.knobs("perfexcrm", fail_next=10, fail_status=500)
    entry_id = dead_letter_via_pipeline(client, redis, "evt_cli_show")
    human = cli("dlq", "show", entry_id)
    assert human.exit_code == 0
    assert "exhausted" in human.output and "status=500" in human.output
    assert "vendor said:" in human.output
    as_json = json.loads(cli("dlq", "show", entry_id, "--json").output)
    assert as_json == client.get(f"/ops/dead-letters/{entry_id}", headers=OPS).get_json()
    missing = cli("dlq", "show", "nope")
    assert missing.exit_code == 1
    assert "no dead letter nope" in missing.output


def test_dlq_replay_after_fix_then_gone_and_double_replay_queues_once(
    cli, client, worker, sandbox, redis
):
    sandbox.knobs("perfexcrm", fail_next=10, fail_status=500)
    entry_id = dead_letter_via_pipeline(client, redis, "evt_cli_replay")
    sandbox.knobs("perfexcrm", fail_next=0, latency_ms=300)
    first = cli("dlq", "replay", entry_id)
    second = cli("dlq", "replay", entry_id)
    assert (first.exit_code, second.exit_code) == (0, 0)
    assert f"{entry_id}: queued" in first.output
    assert "already being replayed" in second.output
    wait_for(lambda: sandbox.record("perfexcrm", 7)["vat"] == "paid 49.0")
    wait_for(lambda: cli("dlq", "show", entry_id).exit_code == 1)
    assert state(redis, entry_id) == "applied"
    audit = json.loads(cli("dlq", "audit", "--json").output)["items"]
    assert [(r["action"], r["id"], r["who"]) for r in audit] == [
        ("replay", entry_id, "cli:night-op")
    ]
    assert audit == client.get("/ops/audit", headers=OPS).get_json()["items"]
    unknown = cli("dlq", "replay", "nope")
    assert unknown.exit_code == 1 and "no dead letter nope" in unknown.output


def test_dlq_bulk_replay_shows_progress_and_replays_each(cli, client, worker, sandbox, redis):
    sandbox.knobs("perfexcrm", fail_next=100, fail_status=422)  # rejected at once
    ids = [dead_letter_via_pipeline(client, redis, f"evt_cli_bulk_{n}") for n in range(3)]
    sandbox.knobs("perfexcrm", fail_next=0)
    usage = cli("dlq", "replay")
    assert usage.exit_code == 2  # neither ids nor a filter: refuse to replay everything
    typo = cli("dlq", "replay", "--code", "rejectd")
    assert typo.exit_code == 2 and "'rejected'" in typo.output  # names the codes it knows
    result = cli("dlq", "replay", "--vendor", "perfex", "--code", "rejected")
    assert result.exit_code == 0, result.output
    assert "3 of 3 done" in result.output and "3 queued" in result.output
    for entry_id in ids:
        wait_for(lambda e=entry_id: state(redis, e) == "applied")
    assert json.loads(cli("dlq", "list", "--json").output)["items"] == []


def test_dlq_discard_and_audit(cli, redis):
    entry_id = synthetic_dead_letter(redis, 1, time.time())
    result = cli("dlq", "discard", entry_id)
    assert result.exit_code == 0 and "discarded" in result.output
    again = cli("dlq", "discard", entry_id)
    assert again.exit_code == 1 and f"no dead letter {entry_id}" in again.output
    log = cli("dlq", "audit")
    assert "discard" in log.output and "cli:night-op" in log.output


def test_dlq_stats(cli, redis):
    synthetic_dead_letter(redis, 1, time.time())
    synthetic_dead_letter(redis, 2, time.time(), vendor="porta", code="exhausted")
    data = json.loads(cli("dlq", "stats", "--json").output)
    assert data == {
        "total": 2,
        "vendor": {"perfex": 1, "porta": 1},
        "code": {"not_found": 1, "exhausted": 1},
    }


def test_events_show_says_when_a_retrying_task_goes_next(cli, client, worker, sandbox, redis):
    sandbox.knobs("perfexcrm", ratelimit_next=1, retry_after="600")
    assert post_stripe(client, payment("evt_cli_next")).status_code == 202
    [task] = task_ids(redis, "evt_cli_next")
    wait_for(lambda: state(redis, task) == "retrying")
    shown = cli("events", "show", "stripe", "evt_cli_next")
    assert shown.exit_code == 0 and "next attempt" in shown.output


def test_events_show_and_replay(cli, client, worker, sandbox, redis):
    assert post_stripe(client, payment("evt_cli_event", customer="999")).status_code == 202
    [first] = task_ids(redis, "evt_cli_event")
    wait_for(lambda: state(redis, first) == "dead")
    shown = cli("events", "show", "stripe", "evt_cli_event")
    assert shown.exit_code == 0
    assert "dead" in shown.output and f"dead letter {first}" in shown.output
    assert "last attempt" in shown.output and "not_found status=404" in shown.output
    as_json = json.loads(cli("events", "show", "stripe", "evt_cli_event", "--json").output)
    assert as_json == client.get("/ops/events/stripe/evt_cli_event", headers=OPS).get_json()
    replayed = cli("events", "replay", "stripe", "evt_cli_event", "--json")
    assert replayed.exit_code == 0
    [second] = json.loads(replayed.output)["task_ids"]
    wait_for(lambda: state(redis, second) == "dead")
    assert task_ids(redis, "evt_cli_event") == [first, second]
    missing = cli("events", "show", "stripe", "nope")
    assert missing.exit_code == 1 and "no stored event stripe/nope" in missing.output
    assert cli("events", "replay", "stripe", "nope").exit_code == 1


def test_cli_says_so_when_redis_is_down(sandbox):
    runner = CliRunner()
    env = {
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "SWITCHBOARD_CONFIG": str(TEST_CONFIG),
        "SANDBOX_URL": sandbox.url,
    }
    result = runner.invoke(main, ["dlq", "list"], env=env)
    assert result.exit_code == 1
    assert "Redis is unreachable" in result.output


def test_the_cli_refuses_a_bad_cursor_or_time(cli):
    bad_cursor = cli("dlq", "list", "--cursor", "garbage")
    assert bad_cursor.exit_code == 2 and "not a cursor" in bad_cursor.output
    bad_time = cli("dlq", "list", "--since", "nan")
    assert bad_time.exit_code == 2 and "Traceback" not in bad_time.output


def test_dlq_cancel_stops_a_job_once_and_names_an_unknown_one(cli, redis):
    from config.loader import load_config
    from webhooks.ops.service import Ops
    from webhooks.rules import RuleSet

    synthetic_dead_letter(redis, 1, time.time())
    config = load_config(TEST_CONFIG, {"SANDBOX_URL": "http://127.0.0.1:9"})
    job = Ops(redis, RuleSet(config)).start_bulk_replay({"all": True}, "t")  # nobody runs it
    done = cli("dlq", "cancel", job["id"])
    assert done.exit_code == 0 and f"job {job['id']}: cancelled" in done.output
    again = cli("dlq", "cancel", job["id"])
    assert again.exit_code == 1 and "already ended (cancelled)" in again.output
    unknown = cli("dlq", "cancel", "nope")
    assert unknown.exit_code == 1 and "no job nope" in unknown.output
    assert "Traceback" not in done.output + again.output + unknown.output


def test_what_a_vendor_said_cannot_drive_the_operators_terminal(cli, redis):
    # OSC 52 (set the clipboard), a screen clear and a right-to-left override, as a
    # vendor's answer or a stored target may carry them: written out, not sent raw
    hostile = "bad\x1b]52;c;ZXZpbA==\x07\x1b[2J\u202etxt.exe"
    task = UpdateTask(
        "stripe",
        "evt_esc",
        "t",
        "r",
        0,
        "perfex",
        "update_customer",
        f"1001{hostile}",
        {"active": True},
        time.time(),
    )
    attempt = {
        "at": time.time(),
        "outcome": "rejected",
        "status": 422,
        "code": "rejected",
        "message": hostile,
        "excerpt": hostile,
        "final": True,
    }
    DeadLetters(redis).put(task, "rejected", f"vendor said {hostile}", [attempt])
    for args in (("dlq", "show", task.id), ("dlq", "list")):
        shown = cli(*args).output
        assert "\x1b" not in shown and "\x07" not in shown and "\u202e" not in shown, shown
        assert "\\x1b]52;c;" in shown
    # the JSON keeps the value as stored (json.dumps escapes it)
    assert json.loads(cli("dlq", "show", task.id, "--json").output)["message"].endswith(hostile)


def test_reading_dead_letters_works_while_the_config_is_broken(redis_server, redis, tmp_path):
    # a broken rule is when ops most need the dead letters: only a replay needs the rules
    entry = synthetic_dead_letter(redis, 1, time.time())
    broken = tmp_path / "switchboard.yaml"
    rule = 'target: "{{ payload.data.object.metadata.perfex_customer }}"'
    assert rule in TEST_CONFIG.read_text()
    broken.write_text(TEST_CONFIG.read_text().replace(rule, rule.replace("payload", "paylod")))
    env = {"REDIS_URL": redis_server.url, "SWITCHBOARD_CONFIG": str(broken), "USER": "op",
           "SANDBOX_URL": "http://127.0.0.1:9"}  # fmt: skip

    def run(*args: str):
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)

    listed = run("dlq", "list", "--json")
    assert listed.exit_code == 0, listed.output
    assert [i["id"] for i in json.loads(listed.stdout)["items"]] == [entry]
    assert "warning:" in listed.stderr and "paylod" in listed.stderr
    assert run("dlq", "show", entry).exit_code == 0
    assert run("dlq", "stats").exit_code == 0
    replay = run("dlq", "replay", entry)  # this one maps with the rules: it says why not
    assert replay.exit_code == 1 and "paylod" in replay.output
