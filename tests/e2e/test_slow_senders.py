"""Senders that stall mid-body cannot take the web down: each is answered 408 and closed
once it has been silent for SWITCHBOARD_BODY_TIMEOUT, and the web goes on answering."""

from __future__ import annotations

import json
import socket
import subprocess

import httpx

from config import embedded_redis
from tests.helpers import ROOT, stripe_headers, wait_for, with_changes, worker_env

THREADS = 8  # switchboard web: gthread, 8 threads per worker process


def _stall(port: int) -> socket.socket:
    """Headers of a 900-byte webhook, one byte of its body, then silence."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Stripe-Signature: t=1,v1=ab\r\nContent-Length: 900\r\n\r\n{"
    )
    return sock


def _answer(sock: socket.socket) -> bytes:
    sock.settimeout(20)
    data = b""
    while chunk := sock.recv(65536):  # until the web closes it
        data += chunk
    return data


def test_stalled_bodies_are_answered_408_and_the_web_keeps_answering(redis_server, tmp_path):
    from webhooks.supervisor import web_command

    port = embedded_redis.free_port()
    env = worker_env(redis_server.url, "http://127.0.0.1:9", SWITCHBOARD_BODY_TIMEOUT="1")
    with (tmp_path / "web.log").open("wb") as log:
        web = subprocess.Popen(web_command(port, 1), cwd=ROOT, env=env, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _up(base), timeout=30)
        stalled = [_stall(port) for _ in range(THREADS + 2)]  # more than it has threads
        body = with_changes("stripe/payment_intent.succeeded.json", id="evt_after_stalls")
        posted = httpx.post(
            f"{base}/webhooks/stripe", content=body, headers=stripe_headers(body), timeout=20
        )
        assert posted.status_code == 202  # served once a stalled thread was let go
        for sock in stalled:
            answer = _answer(sock)
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
            error = json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
            assert error["code"] == "body_timeout"
            sock.close()  # (without the timeout no 408 comes: the read above ends empty)
    finally:
        web.terminate()
        web.wait(timeout=30)


def _up(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
