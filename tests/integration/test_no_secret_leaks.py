"""No configured secret reaches a log line, a dead letter, a task record or an error body.

Every simulator is told to echo the request back (``echo_next``) in an auth failure, as a
vendor's debug error page would: the credentials then reach the dead-letter excerpts, the
attempts and the logs, and only the redaction keeps them out.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from config.loader import load_config
from config.logs import configure_logging
from tests.helpers import (
    ROOT,
    RedisServer,
    everything_in,
    make_settings,
    start_worker,
    stripe_headers,
    wait_for,
    with_changes,
    worker_env,
)
from worker.redact import MARK

CONFIG = ROOT / "tests" / "config" / "switchboard.secrets.yaml"
SECRET = "whsec_leakcheck_source_secret_1"
VENDORS = ("portabilling", "perfexcrm", "soliditech", "halopsa")


@contextmanager
def web_logs(secrets: frozenset[str]) -> Iterator[io.StringIO]:
    """What this process logs (the in-process web app), as ``webhooks.wsgi`` configures it."""
    stream = io.StringIO()
    switchboard = logging.getLogger("switchboard")
    root, level = logging.getLogger(), switchboard.level
    handler = configure_logging(secrets, level="DEBUG", stream=stream)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        switchboard.setLevel(level)


def test_auth_failures_leak_no_secret_anywhere(sandbox, tmp_path, monkeypatch):
    import redis as redis_lib

    from webhooks import create_app

    # its own Redis: the session's worker (another config) must not take these tasks
    redis_server = RedisServer(tmp_path)
    redis_server.start()
    redis = redis_lib.Redis.from_url(redis_server.url)

    monkeypatch.setenv("SANDBOX_URL", sandbox.url)
    config = load_config(CONFIG)
    assert any("leakcheck" in s for s in config.secrets)
    for kind in VENDORS:  # the first call of each answers 401 quoting the credentials
        sandbox.knobs(kind, echo_next=1, fail_status=401)
    log = tmp_path / "worker.log"
    env = worker_env(redis_server.url, sandbox.url, SWITCHBOARD_CONFIG=str(CONFIG))
    worker = start_worker(env, name="leakcheck", log=log)
    try:
        with web_logs(config.secrets) as web_log:
            bodies = deliver_and_die(create_app(make_settings(redis_server.url), config), redis)
    finally:
        worker.terminate()
        worker.wait(timeout=20)
    try:
        assert all(sandbox.http.get(f"/{k}/_sim/knobs").json()["echo_next"] == 0 for k in VENDORS)
        check_excerpts_redacted(redis)
        logged = log.read_text() + web_log.getvalue()
        check_nothing_leaked(redis, logged, bodies, config.secrets)
    finally:
        redis_server.stop()


def deliver_and_die(app, redis) -> str:
    """Post one webhook whose four tasks all die ``auth_failed``, then a badly signed one;
    the HTTP answers' bodies."""
    client = app.test_client()
    body = with_changes("stripe/payment_intent.succeeded.json", id="evt_leakcheck")
    response = client.post(
        "/webhooks/stripe", data=body, headers=stripe_headers(body, secret=SECRET)
    )
    assert response.status_code == 202, response.data
    wait_for(lambda: redis.zcard("sb:dl:index") == 4, timeout=30)
    assert {entry["code"] for entry in dead_letters(redis)} == {"auth_failed"}
    bad = client.post(
        "/webhooks/stripe", data=body, headers=stripe_headers(body, secret="whsec_wrong")
    )
    return bad.get_data(as_text=True) + response.get_data(as_text=True)


def dead_letters(redis) -> list[dict]:
    return [
        json.loads(redis.hget(f"sb:dl:{i.decode()}", "entry"))
        for i in redis.zrange("sb:dl:index", 0, -1)
    ]


def check_excerpts_redacted(redis) -> None:
    """Each vendor's echo reached its dead letter, its secrets blanked: the leak checks
    below are checking something."""
    for entry in dead_letters(redis):
        assert MARK in (entry["attempts"][-1]["excerpt"] or ""), entry


def check_nothing_leaked(redis, logged: str, bodies: str, secrets: frozenset[str]) -> None:
    stored = everything_in(redis)
    for secret in sorted(secrets):
        assert secret not in stored, f"{secret!r} stored in Redis"
        assert secret not in logged, f"{secret!r} in a log"
        assert secret not in bodies, f"{secret!r} in an HTTP answer"
