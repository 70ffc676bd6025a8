"""Stripe: ``Stripe-Signature: t=<unix>,v1=<hex>[,v1=...]``, HMAC-SHA256 over ``t.body``.

The endpoint secret (``whsec_...``) is the UTF-8 key as is. Any one ``v1`` matching any
configured secret passes (rotation on either side); ``v0`` is test-mode and ignored.
Event id ``id``, type ``type``, time ``created``.
"""

from __future__ import annotations

import hashlib
import hmac

from marshmallow import Schema, fields, validate

from webhooks.errors import InvalidSignature, MalformedPayload, MissingSignature
from webhooks.sources.base import Event, InboundRequest, Source, kept_headers
from webhooks.sources.common import Secrets, any_digest_matches, check_window, parse_json, to_epoch


class StripeSchema(Schema):
    secret = Secrets(required=True)
    tolerance = fields.Integer(load_default=300, validate=validate.Range(min=1, max=86400))


class StripeSource(Source):
    kind = "stripe"
    schema = StripeSchema

    def verify(self, request: InboundRequest) -> None:
        header = request.headers.get("Stripe-Signature")
        if not header:
            raise MissingSignature("Stripe-Signature header is missing")
        timestamp, signatures = self._parse_header(header)
        check_window(timestamp, request.received_at, self.settings["tolerance"])
        signed = str(int(timestamp)).encode() + b"." + request.body
        expected = [
            hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest().encode()
            for secret in self.settings["secret"]
        ]
        if not any_digest_matches(expected, signatures):
            raise InvalidSignature("no v1 signature matches")

    @staticmethod
    def _parse_header(header: str) -> tuple[float, list[bytes]]:
        timestamp = None
        signatures = []
        for item in header.split(","):
            key, _, value = item.strip().partition("=")
            if key == "t" and value.isdigit():
                timestamp = float(value)
            elif key == "v1" and value:
                signatures.append(value.encode())
        if timestamp is None or not signatures:
            raise InvalidSignature("Stripe-Signature needs t= and at least one v1=")
        return timestamp, signatures

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
