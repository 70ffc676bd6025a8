"""The web reloads its config when the file changes (webhooks.reload): a new rule maps the
next webhook; a config that does not load is refused with an error line naming the file
and field, and the web keeps serving the rules it has."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os

from config.loader import load_config
from tests.helpers import TEST_CONFIG, hmac_headers, make_settings, wait_for
from webhooks.reload import ConfigWatcher

PHONE_RULE = """
  - name: portal-phone
    source: portal
    events: [phone.changed]
    actions:
      - vendor: perfex
        op: update_customer
        target: "{{ payload.customer.perfex_id }}"
        fields:
          phonenumber: "{{ payload.phone }}"
"""


def _write(path, text: str, tick: int) -> None:
    path.write_text(text)
    os.utime(path, ns=(tick * 10**9, tick * 10**9))  # a change the watcher cannot miss


def _post_phone(client, event_id: str):
    """Post a portal "phone.changed" with the Flask test client or an httpx client."""
    body = json.dumps(
        {"event_id": event_id, "event": "phone.changed", "at": 1_700_000_000,
         "customer": {"perfex_id": "7"}, "phone": "+44 20 7946 0000"}
    ).encode()  # fmt: skip
    key = "data" if hasattr(client, "application") else "content"
    return client.post("/webhooks/portal", headers=hmac_headers(body), **{key: body})


def test_a_changed_rule_is_used_and_a_broken_config_is_refused(
    redis_server, private_db, sandbox, tmp_path, monkeypatch, caplog
):
    from webhooks import create_app

    monkeypatch.setenv("SANDBOX_URL", sandbox.url)
    config = tmp_path / "switchboard.yaml"
    original = TEST_CONFIG.read_text()
    _write(config, original, 1)
    settings = make_settings(redis_server.url.rsplit("/", 1)[0] + "/7", config_path=config)
    app = create_app(settings, load_config(config))
    client = app.test_client()
    watcher = ConfigWatcher(app)
    assert watcher.check() is False  # nothing changed yet
    assert _post_phone(client, "p-1").get_json()["status"] == "ignored"  # no rule yet

    _write(config, original + PHONE_RULE, 2)
    with caplog.at_level(logging.INFO, logger="switchboard.web"):
        assert watcher.check() is True
    assert "config reloaded" in [r.getMessage() for r in caplog.records]
    mapped = _post_phone(client, "p-2")
    assert (mapped.status_code, mapped.get_json()["tasks"]) == (202, 1)

    caplog.clear()
    broken = original + PHONE_RULE.replace("op: update_customer", "op: update_nothing")
    _write(config, broken, 3)
    with caplog.at_level(logging.INFO, logger="switchboard.web"):
        assert watcher.check() is False
    [refused] = [r for r in caplog.records if r.getMessage().startswith("config not reloaded")]
    assert refused.levelname == "ERROR"
    assert any(str(config) in p and "update_nothing" in p for p in refused.sb["problems"])
    still = _post_phone(client, "p-3")  # the rules it had still serve
    assert (still.status_code, still.get_json()["tasks"]) == (202, 1)
    detail = client.get("/readyz").get_json()["detail"]  # says so, beside the log
    assert any("update_nothing" in p for p in detail["config_refused"])
    _write(config, original + PHONE_RULE, 4)  # fixed: used again, and the note goes
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="switchboard.web"):
        assert watcher.check() is False  # the same config it serves: nothing to swap
    assert "config_refused" not in client.get("/readyz").get_json()["detail"]
    # and the log says so: its last word on the file was the ERROR above
    assert "config file loads again: it is the running one" in caplog.messages


def test_switchboard_web_picks_up_a_new_rule_without_a_restart(redis_server, tmp_path):
    import subprocess

    import httpx

    from config import embedded_redis
    from tests.helpers import ROOT, wait_for, worker_env
    from webhooks.supervisor import web_command

    config = tmp_path / "switchboard.yaml"
    _write(config, TEST_CONFIG.read_text(), 1)
    port = embedded_redis.free_port()
    env = worker_env(redis_server.url, "http://127.0.0.1:9", SWITCHBOARD_CONFIG=str(config))
    log = (tmp_path / "web.log").open("wb")
    web = subprocess.Popen(web_command(port, 2), cwd=ROOT, env=env, stdout=log, stderr=log)
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5)
    try:
        wait_for(lambda: _answers(http), timeout=30)
        assert _post_phone(http, "w-1").json()["status"] == "ignored"
        _write(config, TEST_CONFIG.read_text() + PHONE_RULE, 2)
        ids = iter(range(2, 10_000))

        def mapped_by_both() -> bool:  # each request may land on either gunicorn worker
            return all(_post_phone(http, f"w-{next(ids)}").status_code == 202 for _ in range(4))

        wait_for(mapped_by_both, timeout=15)
    finally:
        web.terminate()
        web.wait(timeout=30)
        http.close()


def _answers(http) -> bool:
    try:
        return http.get("/healthz").status_code == 200
    except Exception:
        return False


def test_a_worker_takes_a_changed_vendor_and_refuses_a_broken_config(
    redis_server, sandbox, tmp_path, monkeypatch, caplog
):
    import worker.runtime as runtime
    from worker.timing import hold_seconds
    from worker.vendors import connector_for

    real_close_after = runtime.close_after
    config = tmp_path / "switchboard.yaml"
    original = TEST_CONFIG.read_text()
    _write(config, original, 1)
    monkeypatch.setenv("SWITCHBOARD_CONFIG", str(config))
    monkeypatch.setenv("REDIS_URL", redis_server.url.rsplit("/", 1)[0] + "/7")
    monkeypatch.setenv("SANDBOX_URL", sandbox.url)
    monkeypatch.setattr(runtime, "_runtime", None)  # this test's own, restored after it
    monkeypatch.setattr(runtime, "_watch", runtime._Watch())
    monkeypatch.setattr(runtime, "CONFIG_CHECK_EVERY", 0.0)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))  # a reload re-configures it
    monkeypatch.setattr(root, "level", root.level)
    monkeypatch.setattr(runtime, "close_after", lambda rt, replaced: 0.0)
    first = runtime.get_runtime()
    assert "perfex2" not in first.config.vendors
    perfex = first.connector("perfex")
    assert runtime.get_runtime() is first  # the first look: the same file, nothing new
    added = original.replace(
        "vendors:\n",
        "vendors:\n  perfex2:\n    kind: perfexcrm\n"
        '    base_url: "${SANDBOX_URL}/perfexcrm"\n    auth: {token: perfex-demo-token}\n',
        1,
    )
    _write(config, added, 2)
    with caplog.at_level(logging.INFO, logger="switchboard.worker"):
        second = runtime.get_runtime()
    assert "perfex2" in second.config.vendors and second.connector("perfex2") is not None
    assert second.redis is first.redis  # the same connections, a new config
    assert second.connector("perfex") is perfex  # unchanged vendor: kept, sessions and all
    assert "config reloaded" in [r.getMessage() for r in caplog.records]

    _write(config, added.replace("timeout: 2", "timeout: 3", 1), 3)  # perfex changes
    third = runtime.get_runtime()
    slow = connector_for(dataclasses.replace(perfex.instance, timeout=300.0))
    # kept open until the longest run that may have begun with one of them is over: a
    # fixed 600 s closed a slow vendor's connector under a run still using it
    hold = hold_seconds(second, slow.instance)
    assert runtime.RELOAD_CLOSE_AFTER < hold < real_close_after(second, [perfex, slow])
    slow.close()
    assert third.connector("perfex") is not perfex
    wait_for(lambda: perfex.http.is_closed, timeout=5)  # the replaced one is closed
    assert second.config.secrets <= runtime._watch.file.secrets  # still redacted
    added = added.replace("timeout: 2", "timeout: 3", 1)
    second = third

    caplog.clear()
    _write(config, added.replace("kind: perfexcrm", "kind: nocrm", 1), 4)
    with caplog.at_level(logging.INFO, logger="switchboard.worker"):
        assert runtime.get_runtime() is second  # refused: the running one stays
        assert runtime.get_runtime() is second
    refused = [r for r in caplog.records if r.getMessage().startswith("config not reloaded")]
    assert len(refused) == 1 and refused[0].levelname == "ERROR"  # said once, not per task
    assert any("nocrm" in p for p in refused[0].sb["problems"])


class _SwapOnRead(io.BytesIO):
    """A request body whose first read swaps the app's config (a reload mid-request)."""

    def __init__(self, body: bytes, swap):
        super().__init__(body)
        self.swap = swap

    def _first(self) -> None:
        if self.swap:
            self.swap, swap = None, self.swap
            swap()

    def read(self, *args):
        self._first()
        return super().read(*args)

    def read1(self, *args):
        self._first()
        return super().read1(*args)

    def readinto(self, buffer):
        self._first()
        return super().readinto(buffer)


def test_a_reload_during_a_request_does_not_mix_two_configs(
    redis_server, private_db, sandbox, tmp_path, monkeypatch
):
    """Verified with the old sources, mapped with the new rules, a webhook of a renamed
    source was stored as 'ignored' (no task, and the sender does not retry)."""
    from webhooks import create_app

    monkeypatch.setenv("SANDBOX_URL", sandbox.url)
    config = tmp_path / "switchboard.yaml"
    _write(config, TEST_CONFIG.read_text(), 1)
    renamed = tmp_path / "renamed.yaml"
    _write(renamed, TEST_CONFIG.read_text().replace("portal", "portal_v2"), 1)
    settings = make_settings(redis_server.url.rsplit("/", 1)[0] + "/7", config_path=config)
    app = create_app(settings, load_config(config))
    state = app.extensions["switchboard"]
    body = json.dumps(
        {"event_id": "mid-reload", "event": "address.changed", "at": 1_700_000_000,
         "customer": {"perfex_id": "7"}, "address": {"city": "Leeds", "zip": "LS1"}}
    ).encode()  # fmt: skip
    stream = _SwapOnRead(body, lambda: state.use_config(load_config(renamed)))
    answer = app.test_client().post(
        "/webhooks/portal", input_stream=stream, headers=hmac_headers(body),
        content_length=len(body),
    )  # fmt: skip
    assert stream.swap is None  # the swap did happen mid-request
    assert (answer.status_code, answer.get_json()["tasks"]) == (202, 1)  # the old config's
