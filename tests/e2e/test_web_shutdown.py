"""SIGTERM to the web (gunicorn, as `switchboard web` runs it) while webhooks pour in.

Requests in flight must finish (graceful shutdown), nothing may answer 5xx, and the
answers must tell the truth: every event that got a 2xx is stored with its task, and an
event that got no answer (connection refused or closed) is either stored or not, but
sending it again then gets the right answer (202 if it was not stored, 200 duplicate if
it was) — what a sender's retry sees.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading

import httpx
import redis as redis_lib

from config import embedded_redis
from tests.helpers import ROOT, RedisServer, stripe_headers, wait_for, with_changes, worker_env


def _body(i: int) -> bytes:
    return with_changes("stripe/payment_intent.succeeded.json", id=f"evt_sigterm_{i}")


def test_sigterm_mid_traffic_loses_no_acknowledged_webhook(sandbox, tmp_path):
    from webhooks.supervisor import web_command

    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis")
    server.start()
    port = embedded_redis.free_port()
    env = worker_env(server.url, sandbox.url)
    log = (tmp_path / "web.log").open("wb")
    web = subprocess.Popen(web_command(port, 2), cwd=ROOT, env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}/webhooks/stripe"
    answers: dict[int, int | str] = {}
    lock = threading.Lock()
    counter = iter(range(100_000))
    stop = threading.Event()

    def sender() -> None:
        with httpx.Client(timeout=10) as http:
            while not stop.is_set():
                with lock:
                    i = next(counter)
                body = _body(i)
                try:
                    status: int | str = http.post(
                        url, content=body, headers=stripe_headers(body)
                    ).status_code
                except httpx.TransportError as exc:
                    status = type(exc).__name__
                with lock:
                    answers[i] = status
                if isinstance(status, str):
                    return  # a real sender backs off here; its retry comes below

    try:
        wait_for(lambda: _up(f"http://127.0.0.1:{port}/healthz"), timeout=30)
        threads = [threading.Thread(target=sender) for _ in range(8)]
        for t in threads:
            t.start()
        wait_for(lambda: sum(1 for s in list(answers.values()) if s == 202) >= 100)
        web.send_signal(signal.SIGTERM)
        assert web.wait(timeout=30) == 0  # graceful: in-flight requests finished
        stop.set()
        for t in threads:
            t.join(timeout=15)
        client = redis_lib.Redis.from_url(server.url)
        accepted = [i for i, s in answers.items() if s == 202]
        unanswered = [i for i, s in answers.items() if isinstance(s, str)]
        print(f"{len(accepted)} accepted, {len(unanswered)} unanswered: {set(answers.values())}")
        # every HTTP answer was a 202: no 5xx, no 4xx, no "duplicate" for a fresh id
        assert {s for s in answers.values() if isinstance(s, int)} == {202}
        for i in accepted:  # a 2xx means stored, with its task queued
            tasks = client.hget(f"sb:event:stripe:evt_sigterm_{i}", "tasks")
            assert tasks is not None, f"event {i} was acknowledged but not stored"
            [task_id] = json.loads(tasks)
            assert client.zscore("sb:due", task_id) is not None
        # the sender's retry of anything unanswered gets the truthful answer
        web = subprocess.Popen(web_command(port, 1), cwd=ROOT, env=env, stdout=log, stderr=log)
        wait_for(lambda: _up(f"http://127.0.0.1:{port}/healthz"), timeout=30)
        for i in unanswered:
            stored = client.exists(f"sb:event:stripe:evt_sigterm_{i}")
            body = _body(i)
            status = httpx.post(url, content=body, headers=stripe_headers(body)).status_code
            assert status == (200 if stored else 202)
    finally:
        stop.set()
        if web.poll() is None:
            web.send_signal(signal.SIGTERM)
            web.wait(timeout=30)
        server.stop()
        log.close()


def _up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False
