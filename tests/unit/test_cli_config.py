"""CLI: `config check` exit codes and messages, `rules test` dry runs (nothing queued)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from tests.helpers import FIXTURES, ROOT
from webhooks.cli import main

DEMO = str(ROOT / "config" / "switchboard.yaml")


def run(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, list(args), env={"SWITCHBOARD_CONFIG": DEMO, **(env or {})})


def test_config_check_accepts_the_demo_config():
    result = run("config", "check")
    assert result.exit_code == 0, result.output
    assert "OK (4 sources, 4 vendors" in result.output


def test_config_check_lists_every_problem_and_exits_1(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        (ROOT / "config" / "switchboard.yaml")
        .read_text()
        .replace("bill_status: O", "bill_status: Z", 1)
        .replace("op: update_client", "op: delete_client")
    )
    result = run("config", "check", str(bad))
    assert result.exit_code == 1
    assert f"{bad}: rules[0].actions[0].fields.bill_status:" in result.output
    assert f"{bad}: rules[1].actions[0].op: halopsa has no op 'delete_client'" in result.output
    assert "2 problem(s) found" in result.output
    assert "Traceback" not in result.output


def test_rules_test_prints_the_rendered_tasks_as_json():
    result = run(
        "rules", "test", "stripe", str(FIXTURES / "stripe/payment_intent.succeeded.json"), "--json"
    )
    assert result.exit_code == 0, result.output
    matches = json.loads(result.output)
    assert [m["rule"] for m in matches] == [
        "payment-reopens-billing",
        "payment-activates-psa-client",
    ]
    porta = matches[0]["tasks"][0]
    assert (porta["vendor"], porta["target"], porta["fields"]) == (
        "porta",
        "1001",
        {"bill_status": "O", "credit_limit": 49.0},
    )


def test_rules_test_reads_ids_from_headers_for_standard_webhooks():
    body = FIXTURES / "standard-webhooks/customer.address_changed.json"
    result = run("rules", "test", "crm", str(body), "-H", "webhook-id:msg_1", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)[0]["event_id"] == "msg_1"


def test_rules_test_on_an_unknown_source_exits_1():
    body = FIXTURES / "stripe/invoice.paid.json"
    result = run("rules", "test", "nobody", str(body))
    assert result.exit_code == 1
    assert "no source named 'nobody'" in result.output


def test_worker_refuses_a_bad_batch_max_clearly():
    for bad in ("0", "many", "-3", "2.5"):
        result = run("worker", env={"SWITCHBOARD_BATCH_MAX": bad})
        assert result.exit_code == 1
        assert f"SWITCHBOARD_BATCH_MAX must be a whole number from 1 to 1000, not '{bad}'" in (
            result.output
        )
        assert "Traceback" not in result.output


def test_every_running_command_names_each_bad_variable_and_exits_1():
    bad = {"PORT": "eighty", "SWITCHBOARD_RUN_LEASE": "-1", "SWITCHBOARD_LOG_LEVEL": "loud"}
    for command in (["up"], ["web"], ["worker"], ["config", "check"]):
        result = run(*command, env=bad)
        assert result.exit_code == 1, (command, result.output)
        assert "Traceback" not in result.output
        for name in bad:
            assert name in result.output, (command, name, result.output)


def test_counts_and_ports_out_of_range_are_usage_errors():
    for args in (
        ["web", "--workers", "0"],
        ["worker", "--concurrency", "0"],
        ["sandbox", "--port", "99999"],
    ):
        result = run(*args)
        assert result.exit_code == 2, (args, result.output)
        assert "is not in the range" in result.output and "Traceback" not in result.output


def _customer_without_line2_or_state(tmp_path) -> str:
    data = json.loads((FIXTURES / "stripe/customer.updated.json").read_text())
    data["data"]["object"]["address"].update(line2=None, state=None)  # as Stripe often sends
    path = tmp_path / "customer.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_the_demo_rules_send_a_missing_address_line_as_empty(tmp_path):
    result = run("rules", "test", "stripe", _customer_without_line2_or_state(tmp_path), "--json")
    assert result.exit_code == 0, result.output
    [match] = json.loads(result.output)
    soli = next(t for t in match["tasks"] if t["vendor"] == "soli")
    assert soli["invalid_fields"] is None
    assert soli["fields"]["physical_address"]["address_line2"] == ""


def test_rules_test_shows_what_the_worker_would_refuse(tmp_path):
    config = tmp_path / "switchboard.yaml"
    config.write_text(
        Path(DEMO).read_text().replace(" or '' }}\"", ' }}"')  # the demo before its fix
    )
    event = _customer_without_line2_or_state(tmp_path)
    result = run("rules", "test", "stripe", event, env={"SWITCHBOARD_CONFIG": str(config)})
    assert result.exit_code == 1, result.output  # a task the worker would refuse: failed
    assert "soli.update_customer: INVALID FIELDS" in result.output
    assert "address_line2" in result.output
