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
def sandbox(sandbox_server: Sandbox) -> Sandbox:
    """The simulators, reset to their seed records and default knobs for each test."""
    sandbox_server.reset()
    return sandbox_server
