"""`switchboard up` as a person runs it: real processes, the demo config, Ctrl-C to stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx

from config.embedded_redis import free_port
from tests.helpers import ROOT, fixture_body


def stripe_signed(body: bytes, secret: str) -> dict[str, str]:
    import stripe

    header = stripe.WebhookSignature.generate_signature_header(
        body.decode(), secret, timestamp=int(time.time())
    )
    return {"Stripe-Signature": header, "Content-Type": "application/json"}


def test_up_serves_the_demo_and_a_signed_webhook_changes_the_sandbox(tmp_path):
    port, sandbox_port = free_port(), free_port()
    dropped = ("REDIS_URL", "SWITCHBOARD_CONFIG", "SANDBOX_URL")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update(
        {
            "PORT": str(port),
            "SWITCHBOARD_VAR_DIR": str(tmp_path / "var"),
            # no SANDBOX_URL: up points the demo's vendors at SWITCHBOARD_SANDBOX_PORT itself
            "SWITCHBOARD_SANDBOX_PORT": str(sandbox_port),
            "PYTHONPATH": str(ROOT),
            "SWITCHBOARD_OPS_TOKEN": "e2e-ops-token-not-for-logs",
        }
    )
    started = time.monotonic()
    errors = (tmp_path / "stderr.log").open("w")
    up = subprocess.Popen(
        [sys.executable, "-m", "webhooks.cli", "up"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=errors,
        text=True,
    )
    try:
        banner = ""
        while "Ctrl-C stops everything." not in banner:
            line = up.stdout.readline()  # type: ignore[union-attr]
            assert line, f"up exited early: {banner}"
            banner += line
        ready_after = time.monotonic() - started
        assert "Switchboard is ready" in banner, banner
        # a second up with the same var dir refuses at once: it took the first one's
        # queue and Redis, then died on the web's port and left the CLI pointing nowhere
        again = subprocess.run(
            [sys.executable, "-m", "webhooks.cli", "up"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert again.returncode == 1 and "already runs" in again.stderr, again.stderr
        elsewhere = {**env, "SWITCHBOARD_VAR_DIR": str(tmp_path / "other")}
        clash = subprocess.run(
            [sys.executable, "-m", "webhooks.cli", "up"],
            cwd=ROOT, env=elsewhere, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert clash.returncode == 1 and f"port {port}" in clash.stderr, clash.stderr
        # a token you gave is yours: named, never printed (the banner lands in logs)
        assert "e2e-ops-token-not-for-logs" not in banner
        assert "(token: $SWITCHBOARD_OPS_TOKEN)" in banner, banner
        # the demo's public signing secrets serve (up allows them): it says so
        assert "WARNING" in banner and "STRIPE_WEBHOOK_SECRET" in banner, banner
        print(f"\nswitchboard up was ready after {ready_after:.1f} s")
        sandbox = f"http://127.0.0.1:{sandbox_port}/portabilling/_sim/records/customer:1001"
        assert httpx.get(sandbox).json()["bill_status"] == "S"
        body = fixture_body("stripe/payment_intent.succeeded.json")
        response = httpx.post(
            f"http://127.0.0.1:{port}/webhooks/stripe",
            content=body,
            headers=stripe_signed(body, "whsec_demo_stripe_secret"),
        )
        assert response.status_code == 202, response.text
        assert json.loads(response.text)["tasks"] == 2
        deadline = time.monotonic() + 20
        while httpx.get(sandbox).json()["bill_status"] != "O":
            assert time.monotonic() < deadline, "the sandbox record never changed"
            time.sleep(0.1)
        assert httpx.get(sandbox).json()["credit_limit"] == 49.0
    finally:
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=60) == 0
        errors.close()
    # after the banner, every line is JSON (a log shipper reads them) but the few meant
    # for a person: Celery's banner (20 lines) was printed too
    after = up.stdout.read().splitlines() + (tmp_path / "stderr.log").read_text().splitlines()  # type: ignore[union-attr]
    plain = [line for line in after if line.strip() and not line.startswith("{")]
    for_people = ("stopped", "sandbox on http://", "worker: Warm shutdown")
    assert all(line.startswith(for_people) for line in plain), plain
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert leftovers.stdout.strip() == "", "child processes outlived `up`"
