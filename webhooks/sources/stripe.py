"""Stripe: ``Stripe-Signature: t=<unix>,v1=<hex>[,v1=...]``, HMAC-SHA256 over ``t.body``.

The endpoint secret (``whsec_...``) is the UTF-8 key as is (not base64-decoded). Any one
``v1`` matching any configured secret passes (rotation on either side); ``v0`` is
test-mode and ignored. ``t`` must lie within ``tolerance`` seconds of receipt, in either
direction (``stale_timestamp``). Event id ``id``, type ``type``, time ``created``.
"""

from __future__ import annotations

import hashlib
import hmac

from marshmallow import Schema, validate

from webhooks.errors import InvalidSignature, MalformedPayload, MissingSignature
from webhooks.sources.base import Event, InboundRequest, Source, kept_headers
from webhooks.sources.common import (
    Secrets,
    any_digest_matches,
    check_window,
    header,
    parse_json,
    unix_digits,
)
from worker.times import to_epoch
from worker.vendors.values import WholeNumber

HEADER = "Stripe-Signature"


class StripeSchema(Schema):
    secret = Secrets(required=True)
    tolerance = WholeNumber(load_default=300, validate=validate.Range(min=1, max=86400))


class StripeSource(Source):
    kind = "stripe"
    schema = StripeSchema

    def verify(self, request: InboundRequest) -> None:
        value = header(request.headers, HEADER)
        if not value:
            raise MissingSignature(f"{HEADER} header is missing")
        timestamp, signatures = parse_signature_header(value)
        check_window(int(timestamp), request.received_at, self.settings["tolerance"])
        # sign the t value exactly as sent: that is the text the sender signed
        signed = timestamp.encode() + b"." + request.body
        expected = [
            hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest().encode()
            for secret in self.settings["secret"]
        ]
        if not any_digest_matches(expected, signatures):
            raise InvalidSignature("no v1 signature matches")

    def parse(self, request: InboundRequest) -> list[Event]:
        payload = parse_json(request.body)
        if not isinstance(payload, dict):
            raise MalformedPayload("a Stripe event is a JSON object")
        event_id, event_type = payload.get("id"), payload.get("type")
        if not isinstance(event_id, str) or not event_id:
            raise MalformedPayload("event has no id", code="missing_event_id")
        if not isinstance(event_type, str) or not event_type:
            raise MalformedPayload("event has no type")
        try:
            occurred_at = to_epoch(payload.get("created"))
        except ValueError as exc:
            raise MalformedPayload("event has no valid created time") from exc
        return [
            Event(
                self.name,
                event_id,
                event_type,
                occurred_at,
                request.received_at,
                payload,
                kept_headers(request.headers),
            )
        ]


def parse_signature_header(value: str) -> tuple[str, list[bytes]]:
    """``t=..,v1=..,v1=..,v0=..`` -> (t as sent, every v1 in lower-case hex).

    Malformed (no digits-only ``t``, no ``v1``) is ``invalid_signature``: the header is
    there, so "missing" would mislead whoever debugs the sender.
    """
    timestamp: str | None = None
    signatures: list[bytes] = []
    for item in value.split(","):
        key, _, text = item.strip().partition("=")
        if key == "t" and unix_digits(text) is not None:
            timestamp = text.strip()
        elif key == "v1" and text:
            signatures.append(text.strip().lower().encode())
    if timestamp is None or not signatures:
        raise InvalidSignature(f"{HEADER} needs t=<unix seconds> and at least one v1=")
    return timestamp, signatures
