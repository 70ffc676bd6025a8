"""Standard Webhooks (standardwebhooks.com): ``webhook-id``, ``webhook-timestamp``,
``webhook-signature``.

Signed string ``<id>.<timestamp>.<body>``, HMAC-SHA256 keyed with the base64 part of the
``whsec_...`` secret, signature ``v1,<base64>`` (a space-separated list; any match
passes). The crypto is the reference ``standardwebhooks`` package's; this module adds
what it lacks for an HTTP answer:

* precise codes: it raises one ``WebhookVerificationError`` for everything, so missing
  headers (``missing_signature``) and the 5-minute window (``stale_timestamp``, both
  directions) are checked here first, and what it still rejects is ``invalid_signature``;
* rotation: one ``Webhook`` per configured secret, any may match;
* tolerance of what it cannot parse: it raises ``ValueError`` at the first entry without
  a comma or with bad base64 (and on a double space), so one junk entry failed a valid
  signature beside it, and every secret after the first. Such entries are dropped
  before it sees the header (:func:`well_formed`); a body that is not UTF-8 is a 400.

Event id ``webhook-id``, type the body's ``type``, occurred_at the body's ``timestamp``
(``webhook-timestamp`` when it has none: that header is the attempt's time, see
:func:`_occurred_at`).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from marshmallow import Schema, ValidationError
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from webhooks.errors import (
    InvalidSignature,
    MalformedPayload,
    MissingSignature,
    StaleTimestamp,
)
from webhooks.sources.base import Event, InboundRequest, Source, kept_headers
from webhooks.sources.common import (
    Secrets,
    check_window,
    header,
    parse_json,
    unix_digits,
)
from worker.times import to_epoch

ID, TIMESTAMP, SIGNATURE = "webhook-id", "webhook-timestamp", "webhook-signature"
PREFIX = "whsec_"
#: the spec's tolerance, and the one the package enforces (not configurable there)
TOLERANCE = 300


def decode_secret(secret: str) -> bytes:
    """The HMAC key in ``whsec_<base64>``; ValueError unless it is exactly that."""
    if not secret.startswith(PREFIX):
        raise ValueError(f"must start with {PREFIX!r}")
    text = secret[len(PREFIX) :]
    try:
        # strict: the package's own decode silently drops invalid characters, so a typo
        # would give a different (but working) key and every delivery would fail
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"the part after {PREFIX!r} is not base64") from exc
    if not key:
        raise ValueError(f"the part after {PREFIX!r} is empty")
    return key


def _occurred_at(payload: dict[str, Any], attempt: int) -> float:
    """When the event happened: the body's ``timestamp`` (the spec's payload carries one).
    ``webhook-timestamp`` is the time of the *attempt* ("updated every time an attempt is
    retried"), so by it a retried older event looked newer than one sent since, and
    overwrote its fields at the vendor. It stands in only when the body has no usable
    ``timestamp``."""
    stated = payload.get("timestamp")
    if stated is not None:
        try:
            return to_epoch(stated)
        except ValueError:
            pass
    return float(attempt)


def well_formed(signatures: str) -> str:
    """The ``v1,<base64>`` entries of a ``webhook-signature`` header, one space apart; the
    spec lets senders add other versions, and junk must not hide a valid entry."""
    kept = []
    for entry in signatures.split():
        version, _, signature = entry.partition(",")
        if version != "v1" or not signature:
            continue
        try:
            base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError):
            continue
        kept.append(entry)
    return " ".join(kept)


class WhsecSecrets(Secrets):
    """Secrets in the ``whsec_<base64>`` format, checked at config load."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> list[str]:
        secrets = super()._deserialize(value, attr, data, **kwargs)
        for secret in secrets:
            try:
                decode_secret(secret)
            except ValueError as exc:
                # never echo the secret itself: config errors are printed and logged
                raise ValidationError(f"not a whsec_<base64> secret: {exc}") from None
        return secrets


class StandardWebhooksSchema(Schema):
    # no tolerance setting: the spec and the package fix it at 5 minutes
    secret = WhsecSecrets(required=True)


class StandardWebhooksSource(Source):
    kind = "standard-webhooks"
    schema = StandardWebhooksSchema

    def __init__(self, name: str, settings: Mapping[str, Any]):
        super().__init__(name, settings)
        # the key is decoded by us (strictly) and handed over as bytes
        self._webhooks = [Webhook(decode_secret(s)) for s in settings["secret"]]

    def verify(self, request: InboundRequest) -> None:
        values = {
            name: (header(request.headers, name) or "").strip()
            for name in (ID, TIMESTAMP, SIGNATURE)
        }
        missing = [name for name, value in values.items() if not value]
        if missing:
            raise MissingSignature(f"header(s) missing: {', '.join(missing)}")
        timestamp = unix_digits(values[TIMESTAMP])
        if timestamp is None:
            raise InvalidSignature(f"{TIMESTAMP} is not a unix time in seconds")
        check_window(timestamp, request.received_at, TOLERANCE)
        try:
            body = request.body.decode("utf-8")
        except UnicodeDecodeError as exc:
            # the package signs text; JSON on the wire is UTF-8 (RFC 8259) anyway
            raise MalformedPayload("body is not UTF-8", code="malformed_json") from exc
        headers = dict(values)
        headers[TIMESTAMP] = str(timestamp)  # as the package re-renders it when signing
        headers[SIGNATURE] = well_formed(values[SIGNATURE])
        if not headers[SIGNATURE]:
            raise InvalidSignature(f"{SIGNATURE} holds no v1,<base64> entry")
        for webhook in self._webhooks:
            if self._matches(webhook, body, headers):
                return
        raise InvalidSignature("no v1 signature matches")

    @staticmethod
    def _matches(webhook: Webhook, body: str, headers: dict[str, str]) -> bool:
        try:
            webhook.verify(body, headers, json_parse=False)
        except WebhookVerificationError as exc:
            # our window check passed against received_at; the package re-checks against
            # its own clock, so a request can only get here "too old" by a hair
            if "timestamp" in str(exc).lower():
                raise StaleTimestamp("timestamp outside the tolerance") from exc
            return False
        return True

    def parse(self, request: InboundRequest) -> list[Event]:
        event_id = (header(request.headers, ID) or "").strip()
        if not event_id:
            raise MalformedPayload(f"{ID} header is missing", code="missing_event_id")
        timestamp = unix_digits(header(request.headers, TIMESTAMP) or "")
        if timestamp is None:
            raise MalformedPayload(f"{TIMESTAMP} is not a unix time in seconds")
        payload = parse_json(request.body)
        if not isinstance(payload, dict):
            raise MalformedPayload("a Standard Webhooks body is a JSON object")
        event_type = payload.get("type")
        if not isinstance(event_type, str) or not event_type:
            raise MalformedPayload("event has no type")
        return [
            Event(
                self.name,
                event_id,
                event_type,
                _occurred_at(payload, timestamp),
                request.received_at,
                payload,
                kept_headers(request.headers),
            )
        ]
