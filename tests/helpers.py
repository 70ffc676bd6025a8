"""Plain helpers for tests: fixture bodies, signing with the senders' own libraries, polling."""

from __future__ import annotations

import json
import time
from pathlib import Path

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


def hmac_headers(body: bytes, secret: str = PORTAL_SECRET, header: str = "X-Signature") -> dict:
    import hashlib
    import hmac

    return {
        header: hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
        "Content-Type": "application/json",
    }
