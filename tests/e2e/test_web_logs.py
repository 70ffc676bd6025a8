"""`switchboard web` as deployed writes nothing but JSON lines: gunicorn's own start-up
lines, one line per webhook, one per other request (ops, health at DEBUG)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess

import httpx

from config import embedded_redis
from tests.helpers import ROOT, stripe_headers, wait_for, with_changes, worker_env
from tests.ops.support import OPS


def test_every_line_the_web_writes_is_json(redis_server, sandbox, tmp_path):
    from webhooks.supervisor import web_command

    port = embedded_redis.free_port()
    env = {**worker_env(redis_server.url, sandbox.url), "SWITCHBOARD_OPS_TOKEN": "test-ops-token"}
    log_path = tmp_path / "web.log"
    with log_path.open("wb") as log:
        web = subprocess.Popen(web_command(port, 1), cwd=ROOT, env=env, stdout=log, stderr=log)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: _answers(f"{base}/healthz"), timeout=30)
            body = with_changes("stripe/payment_intent.succeeded.json", id="evt_json_logs")
            posted = httpx.post(
                f"{base}/webhooks/stripe", content=body, headers=stripe_headers(body)
            )
            assert posted.status_code == 202
            assert httpx.get(f"{base}/ops/dead-letters", headers=OPS).status_code == 200
            assert httpx.get(f"{base}/nowhere").status_code == 404
            # gunicorn refuses a header line with no colon and logs it, quoting the line
            assert _raw(port, b"X-Ops-Token test-ops-token").startswith(b"HTTP/1.1 400")
        finally:
            web.send_signal(signal.SIGTERM)
            web.wait(timeout=30)
    lines = [line for line in log_path.read_text().splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}") from None
    messages = [p["msg"] for p in parsed]
    assert any("Listening at" in m for m in messages), messages  # gunicorn's own
    assert [p["event_id"] for p in parsed if p["msg"] == "webhook accepted"] == ["evt_json_logs"]
    requests = {(p["method"], p["path"], p["status"]) for p in parsed if p["msg"] == "request"}
    assert requests == {("GET", "/ops/dead-letters", 200), ("GET", "/nowhere", 404)}
    assert any("Invalid request" in m for m in messages), messages  # it was logged, and
    assert "test-ops-token" not in log_path.read_text()  # redacted there too


def _raw(port: int, header_line: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + header_line + b"\r\n\r\n")
        return conn.recv(1024)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
