"""Test support for the source verifiers: fixtures on disk, configured sources, and
signers that are the senders' own libraries (never our code)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import stripe
from hubspot.utils.signature import Signature
from standardwebhooks import Webhook

from webhooks.sources import SOURCE_KINDS, InboundRequest, Source

#: <checkout>/shared/fixtures on CI; /work/shared/fixtures from a worktree
FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures"

STRIPE_SECRET = "whsec_test_5fJ2mQ8rT1vX9zK3"
STRIPE_OLD_SECRET = "whsec_test_old_0aB1cD2eF3gH4iJ5"
SW_SECRET = "whsec_" + base64.b64encode(b"standard-webhooks-key-0123456789").decode()
SW_OLD_SECRET = "whsec_" + base64.b64encode(b"an-older-standard-webhooks-key!!").decode()
HUBSPOT_SECRET = "5d2a4c1e-8b7f-4e3a-9c6d-0f1e2d3c4b5a"
HUBSPOT_OLD_SECRET = "0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d"
HMAC_SECRET = "portal-shared-secret"
HMAC_OLD_SECRET = "portal-previous-secret"

HUBSPOT_URL = "https://hooks.example.com/webhooks/hubspot"
INGEST_URL = "https://switchboard.example.com/webhooks/"

HMAC_SETTINGS = {
    "header": "X-Signature",
    "id": "{{ payload.event_id }}",
    "type": "{{ payload.event }}",
    "occurred_at": "{{ payload.at }}",
}


def fixture(path: str) -> bytes:
    return (FIXTURES / path).read_bytes()


def fixtures(kind: str) -> list[str]:
    """The shared fixtures of ``kind``: never none (a glob of a missing directory would
    make the tests that loop over them pass having checked nothing)."""
    found = sorted(f"{kind}/{p.name}" for p in (FIXTURES / kind).glob("*.json"))
    assert found, f"no {kind} fixtures in {FIXTURES}: the tests need ../shared beside the checkout"
    return found


def make_source(kind: str, name: str | None = None, **settings: Any) -> Source:
    """Build a source the way the config loader does: through the kind's schema."""
    cls = SOURCE_KINDS[kind]
    return cls(name or kind, cls.schema().load(settings))


def request(
    body: bytes,
    headers: Mapping[str, str],
    *,
    url: str = INGEST_URL,
    method: str = "POST",
    received_at: float | None = None,
) -> InboundRequest:
    return InboundRequest(
        method=method,
        url=url,
        headers=dict(headers),
        body=body,
        received_at=time.time() if received_at is None else received_at,
    )


# -- the senders' signers ---------------------------------------------------------------
def stripe_headers(body: bytes, secret: str = STRIPE_SECRET, at: int | None = None) -> dict:
    timestamp = int(time.time()) if at is None else at
    value = stripe.WebhookSignature.generate_signature_header(body.decode(), secret, timestamp)
    return {"Stripe-Signature": value}


def sw_headers(
    body: bytes, secret: str = SW_SECRET, msg_id: str = "msg_2a6ZqD1x", at: int | None = None
) -> dict:
    timestamp = int(time.time()) if at is None else at
    moment = dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)
    signature = Webhook(secret).sign(msg_id, moment, body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }


def hubspot_headers(
    body: bytes,
    secret: str = HUBSPOT_SECRET,
    uri: str = HUBSPOT_URL,
    at_ms: int | None = None,
    method: str = "POST",
) -> dict:
    timestamp = str(int(time.time() * 1000) if at_ms is None else at_ms)
    signature = Signature.get_signature(
        secret, body.decode(), "v3", http_uri=uri, http_method=method, timestamp=timestamp
    )
    return {"X-HubSpot-Signature-v3": signature, "X-HubSpot-Request-Timestamp": timestamp}


def hmac_headers(
    body: bytes, secret: str = HMAC_SECRET, header: str = "X-Signature", prefix: str = ""
) -> dict:
    # the generic scheme has no sender library: the standard library's hmac is the reference
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {header: prefix + digest}


def json_body(value: Any) -> bytes:
    return json.dumps(value).encode()
