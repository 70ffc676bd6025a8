"""A vendor answer or a connector bug the code did not foresee still ends a task.

Before, anything a connector raised that was not a ``VendorError`` escaped the runner:
no attempt was recorded, the task's run lease brought it back every two minutes (calling
the vendor each time), and it vanished when its record expired. Now it is a retried
``unexpected`` attempt and, once retries are used up, an ``exhausted`` dead letter.
"""

from __future__ import annotations

import io
import json
import logging

from config.logs import configure_logging
from tests.helpers import deliver, store_perfex_task, stripe_headers, wait_for, with_changes
from worker import keys
from worker.queue import Queue
from worker.vendors.perfexcrm import PerfexCRM


def test_an_answer_that_cannot_be_decoded_is_retried_then_applied(client, worker, sandbox, redis):
    sandbox.knobs("perfexcrm", garble_next=1)  # a 200 whose gzip body is not gzip
    body = with_changes("stripe/payment_intent.succeeded.json", id="evt_garbled")
    assert (
        client.post("/webhooks/stripe", data=body, headers=stripe_headers(body)).status_code == 202
    )
    queue = Queue(redis)
    wait_for(lambda: queue.load_event("stripe", "evt_garbled") is not None)
    _, [task_id] = queue.load_event("stripe", "evt_garbled")  # type: ignore[misc]
    wait_for(lambda: queue.load_task(task_id).state == "applied")  # type: ignore[union-attr]
    attempts = queue.load_task(task_id).attempts  # type: ignore[union-attr]
    assert [a["outcome"] for a in attempts] == ["unavailable", "applied"]
    assert "DecodingError" in attempts[0]["message"]
    assert sandbox.record("perfexcrm", 7)["vat"] == "paid 49.0"


class BuggyPerfex(PerfexCRM):
    """A connector with a bug: it fails after the vendor answered (as a parser would)."""

    def op_update_customer(self, target, fields_):
        super().op_update_customer(target, fields_)
        return {"id": {}["id"]}  # KeyError


def test_a_connector_bug_is_retried_then_dead_lettered_exhausted(runtime, private_db, sandbox):
    runtime._connectors["perfex"] = BuggyPerfex(runtime.config.vendors["perfex"])
    queue = Queue(private_db)
    task = store_perfex_task(queue, "evt_bug", "paid 1")

    outcomes = [deliver(runtime, queue, task) for _ in range(3)]  # max_attempts: 3

    assert outcomes == ["retrying", "retrying", "dead"]
    record = queue.load_task(task.id)
    assert record is not None and record.state == "dead"
    assert [a["outcome"] for a in record.attempts] == ["unexpected"] * 3
    assert "KeyError" in record.attempts[-1]["message"]
    entry = runtime.dead_letters.get(task.id)
    assert entry is not None and entry["code"] == "exhausted"
    assert not private_db.zscore("sb:waiting", task.id)
    assert len([e for e in sandbox.log("perfexcrm") if e["method"] == "PUT"]) == 3


class LeakyPerfex(PerfexCRM):
    """A bug whose exception text holds a secret no config names: a session id."""

    session = "sess-runtime-5f0c2e9a71"  # as a vendor session obtained at run time

    def secret_values(self):
        return [*super().secret_values(), self.session]

    def op_update_customer(self, target, fields_):
        raise KeyError(f"no 'id' in the answer to session {self.session}")


def test_a_connector_bug_is_logged_with_its_traceback_and_no_secret(runtime, private_db):
    runtime._connectors["perfex"] = LeakyPerfex(runtime.config.vendors["perfex"])
    queue = Queue(private_db)
    task = store_perfex_task(queue, "evt_leak", "paid 1")
    stream = io.StringIO()
    handler = configure_logging(runtime.config.secrets, stream=stream)
    try:
        assert deliver(runtime, queue, task) == "retrying"
    finally:
        logging.getLogger().removeHandler(handler)
    logged = stream.getvalue()
    assert "Traceback" in logged and "KeyError" in logged and "op_update_customer" in logged
    assert LeakyPerfex.session not in logged
    stored = json.dumps(
        {k.decode(): v.decode() for k, v in private_db.hgetall(keys.task(task.id)).items()}
    )
    assert "KeyError" in stored and LeakyPerfex.session not in stored
