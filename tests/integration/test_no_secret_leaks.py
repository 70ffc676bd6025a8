"""No configured secret reaches a log line, a dead letter, a task record or an error body."""

from __future__ import annotations

import json

from config.loader import load_config
from tests.helpers import (
    ROOT,
    RedisServer,
    make_settings,
    start_worker,
    stripe_headers,
    wait_for,
    with_changes,
    worker_env,
)

CONFIG = ROOT / "tests" / "config" / "switchboard.secrets.yaml"
SECRET = "whsec_leakcheck_source_secret_1"


def everything_in(redis) -> str:
    """Every key and value in Redis, as text."""
    out = []
    for key in redis.scan_iter("*"):
        kind = redis.type(key)
        if kind == b"hash":
            out.append(
                json.dumps(
                    {
                        k.decode(): v.decode("utf-8", "replace")
                        for k, v in redis.hgetall(key).items()
                    }
                )
            )
        elif kind == b"string":
            out.append(redis.get(key).decode("utf-8", "replace"))
        elif kind == b"list":
            out += [v.decode("utf-8", "replace") for v in redis.lrange(key, 0, -1)]
        elif kind == b"zset":
            out += [m.decode() for m in redis.zrange(key, 0, -1)]
        out.append(key.decode())
    return "\n".join(out)


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
    log = tmp_path / "worker.log"
    env = worker_env(redis_server.url, sandbox.url, SWITCHBOARD_CONFIG=str(CONFIG))
    worker = start_worker(env, name="leakcheck", log=log)
    try:
        app = create_app(make_settings(redis_server.url, config_path=CONFIG), config)
        client = app.test_client()
        body = with_changes("stripe/payment_intent.succeeded.json", id="evt_leakcheck")
        response = client.post(
            "/webhooks/stripe", data=body, headers=stripe_headers(body, secret=SECRET)
        )
        assert response.status_code == 202, response.data
        wait_for(lambda: redis.zcard("sb:dl:index") == 4, timeout=30)
        codes = {
            json.loads(redis.hget(f"sb:dl:{i.decode()}", "entry"))["code"]
            for i in redis.zrange("sb:dl:index", 0, -1)
        }
        assert codes == {"auth_failed"}
        bad = client.post(
            "/webhooks/stripe", data=body, headers=stripe_headers(body, secret="whsec_wrong")
        )
        bodies = bad.get_data(as_text=True) + response.get_data(as_text=True)
    finally:
        worker.terminate()
        worker.wait(timeout=20)
    try:
        check_nothing_leaked(redis, log.read_text(), bodies, config.secrets)
    finally:
        redis_server.stop()


def check_nothing_leaked(redis, logged: str, bodies: str, secrets: frozenset[str]) -> None:
    stored = everything_in(redis)
    for secret in sorted(secrets):
        assert secret not in stored, f"{secret!r} stored in Redis"
        assert secret not in logged, f"{secret!r} in the worker log"
        assert secret not in bodies, f"{secret!r} in an HTTP answer"
