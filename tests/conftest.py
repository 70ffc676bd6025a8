"""Shared fixtures: a real Redis, real Celery workers, the vendor simulators over HTTP.

One line each to use: ``sandbox`` (simulators in a thread, real HTTP), ``redis_url`` /
``redis`` (a private redis-server), ``worker`` (a Celery worker process), ``app`` /
``client`` (the Flask app on that Redis), ``cli`` (click runner).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from sandbox.server import serve_in_thread


class Sandbox:
    """Handle on the running simulators: base URL per kind and their admin surface."""

    def __init__(self, url: str):
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=10)

    def base(self, kind: str) -> str:
        return f"{self.url}/{kind}"

    def record(self, kind: str, rid: str | int) -> dict:
        response = self.http.get(f"/{kind}/_sim/records/{rid}")
        response.raise_for_status()
        return response.json()

    def log(self, kind: str) -> list[dict]:
        return self.http.get(f"/{kind}/_sim/log").json()

    def knobs(self, kind: str, **values: object) -> dict:
        response = self.http.post(f"/{kind}/_sim/knobs", json=values)
        response.raise_for_status()
        return response.json()

    def expire(self, kind: str) -> None:
        self.http.post(f"/{kind}/_sim/expire").raise_for_status()

    def reset(self, kind: str | None = None) -> None:
        kinds = [kind] if kind else self.http.get("/").json()["simulators"]
        for k in kinds:
            self.http.post(f"/{k}/_sim/reset").raise_for_status()


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[Sandbox]:
    server, url = serve_in_thread()
    yield Sandbox(url)
    server.shutdown()


@pytest.fixture
def sandbox(sandbox_server: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    """The simulators, reset to their seed records and default knobs for each test; the
    test's ``SANDBOX_URL`` points at them (the test configs' vendors read it)."""
    sandbox_server.reset()
    monkeypatch.setenv("SANDBOX_URL", sandbox_server.url)
    return sandbox_server


# -- Redis, worker, app ---------------------------------------------------------------
import os  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

import redis as redis_lib  # noqa: E402

from config.loader import load_config  # noqa: E402
from tests.helpers import TEST_CONFIG, RedisServer, make_settings, start_worker, worker_env  # noqa: E402


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    from worker.metrics import BUFFER

    BUFFER.flush()  # counts still buffered go out now, not retried against a stopped server
    server.stop()


@pytest.fixture
def redis(redis_server: RedisServer) -> redis_lib.Redis:
    """A client on the private Redis, with Switchboard's keys emptied for each test."""
    if redis_server.process is None:  # a test stopped it; bring it back
        redis_server.start()
    client = redis_lib.Redis.from_url(redis_server.url)
    # counts an earlier test buffered in this process go out now, not into this test's Redis
    from worker.metrics import BUFFER

    BUFFER.flush()
    # only our keys: Celery's queue bindings (_kombu.*) must survive, or its publishes
    # would be routed to kombu's undeliverable queue
    keys = list(client.scan_iter("sb:*", count=1000))
    if keys:
        client.delete(*keys)
    return client


@pytest.fixture
def private_db(redis_server: RedisServer) -> Iterator[redis_lib.Redis]:
    """Database 7 of the test Redis: no worker's relay reads it, so what a test queues
    there stays queued (the session's worker, if running, uses database 0)."""
    client = redis_lib.Redis.from_url(redis_server.url.rsplit("/", 1)[0] + "/7")
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture
def private_client(
    redis_server: RedisServer,
    private_db: redis_lib.Redis,
    sandbox: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
):
    """A test client of an app on database 7 (``private_db``), which no worker reads:
    what it queues stays queued even while the session's worker runs."""
    from webhooks import create_app

    monkeypatch.setenv("SANDBOX_URL", sandbox.url)
    settings = make_settings(redis_server.url.rsplit("/", 1)[0] + "/7", max_body=64 * 1024)
    return create_app(settings, load_config(TEST_CONFIG)).test_client()


@pytest.fixture(scope="session")
def worker_process(
    redis_server: RedisServer, sandbox_server: Sandbox
) -> Iterator[subprocess.Popen[bytes]]:
    before = os.environ.get("SANDBOX_URL")
    os.environ["SANDBOX_URL"] = sandbox_server.url
    try:
        process = start_worker(worker_env(redis_server.url, sandbox_server.url))
        yield process
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
    finally:  # a session fixture: monkeypatch is per test, so restore it by hand
        if before is None:
            os.environ.pop("SANDBOX_URL", None)
        else:
            os.environ["SANDBOX_URL"] = before


@pytest.fixture
def worker(
    worker_process: subprocess.Popen[bytes], redis: redis_lib.Redis
) -> subprocess.Popen[bytes]:
    """The worker, with a clean Redis; waits for its first heartbeat after the flush."""
    assert worker_process.poll() is None, "the worker process died"
    deadline = time.monotonic() + 20
    while not redis.hlen("sb:heartbeats"):
        assert time.monotonic() < deadline, "no worker heartbeat"
        time.sleep(0.05)
    return worker_process


@pytest.fixture
def app(
    redis_server: RedisServer,
    sandbox: Sandbox,
    redis: redis_lib.Redis,
    monkeypatch: pytest.MonkeyPatch,
):
    from webhooks import create_app

    monkeypatch.setenv("SANDBOX_URL", sandbox.url)
    settings = make_settings(redis_server.url, max_body=64 * 1024)
    return create_app(settings, load_config(TEST_CONFIG))


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runtime(
    redis_server: RedisServer,
    private_db: redis_lib.Redis,
    sandbox: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
):
    """A worker's runtime in this process, on database 7 (no worker process reads it):
    a test runs deliveries itself with :func:`worker.runner.process`, against the sandbox."""
    from worker.runtime import build_runtime

    monkeypatch.setenv("SANDBOX_URL", sandbox.url)
    settings = make_settings(redis_server.url.rsplit("/", 1)[0] + "/7")
    rt = build_runtime(settings, load_config(TEST_CONFIG))
    yield rt
    rt.redis.close()
