"""HubSpot webhooks, signature v3: ``X-HubSpot-Signature-v3`` + ``X-HubSpot-Request-Timestamp``.

Signature = base64(HMAC-SHA256(client secret, METHOD + URI + raw body + timestamp)), the
timestamp in unix **milliseconds**, within ``tolerance`` (300 s) of receipt either way.

The URI is the one HubSpot called, which is not always the one we see:

* without ``public_url``: ``InboundRequest.url`` as is. Ingest builds it from Flask's
  ``request.url``, which reflects ``X-Forwarded-Proto/-Host/-Prefix`` only when the app is
  wrapped in werkzeug's ``ProxyFix`` (trusting the proxy); behind a TLS-terminating proxy
  without it the scheme is ``http`` and every signature fails.
* with ``public_url`` (e.g. ``https://hooks.example.com`` or
  ``https://example.com/switchboard``): the signed URI is ``public_url`` (trailing ``/``
  dropped) + the path and query of ``InboundRequest.url``. So it replaces the scheme, host
  and port, plus any path prefix the proxy strips before the request reaches us; no trust
  in forwarded headers is needed.

As HubSpot documents for v3, the percent-encoded characters ``: / ? @ ! $ ' ( ) * , ;`` in
the URI are decoded before signing. The body is a JSON array of up to 100 events; each is
its own :class:`Event` (id ``eventId``, type ``subscriptionType``, time ``occurredAt`` ms).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
from typing import Any
from urllib.parse import urlsplit

from marshmallow import Schema, ValidationError, fields, validate

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
from worker.vendors.values import WholeNumber

SIGNATURE = "X-HubSpot-Signature-v3"
TIMESTAMP = "X-HubSpot-Request-Timestamp"

#: HubSpot's table: these escapes are decoded in the URI before it is signed
_DECODED = {
    "%3A": ":", "%2F": "/", "%3F": "?", "%40": "@", "%21": "!", "%24": "$",
    "%27": "'", "%28": "(", "%29": ")", "%2A": "*", "%2C": ",", "%3B": ";",
}  # fmt: skip
_ESCAPE = re.compile("|".join(_DECODED), re.IGNORECASE)


class PublicUrl(fields.String):
    """``http(s)://host[:port][/prefix]``: no query, no fragment (they could not be joined)."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            parts = urlsplit(text)
        except ValueError as exc:  # "http://[::1": an unclosed IPv6 bracket
            raise ValidationError(f"not a URL: {exc}") from exc
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValidationError("must be an absolute http(s) URL, e.g. https://hooks.example.com")
        if parts.query or parts.fragment or "?" in text or "#" in text:
            raise ValidationError("must have no query or fragment: the request's are appended")
        return text.rstrip("/")


class HubSpotSchema(Schema):
    secret = Secrets(required=True)  # the app's client secret
    tolerance = WholeNumber(load_default=300, validate=validate.Range(min=1, max=86400))
    public_url = PublicUrl(load_default=None)


def signed_uri(url: str, public_url: str | None) -> str:
    """The URI as HubSpot signed it, from the URL we saw and the optional public base."""
    if public_url:
        try:
            parts = urlsplit(url)
        except ValueError as exc:  # e.g. "http://[::1/x": an unbalanced IPv6 host
            raise InvalidSignature("the request URL cannot be parsed") from exc
        path = parts.path or "/"
        url = public_url + path + (f"?{parts.query}" if parts.query else "")
    url = url.split("#", 1)[0]
    return _ESCAPE.sub(lambda m: _DECODED[m.group(0).upper()], url)


class HubSpotSource(Source):
    kind = "hubspot"
    schema = HubSpotSchema
    needs_url = True  # v3 signs method + URI + body + timestamp

    def verify(self, request: InboundRequest) -> None:
        signature = (header(request.headers, SIGNATURE) or "").strip()
        timestamp = (header(request.headers, TIMESTAMP) or "").strip()
        if not signature or not timestamp:
            raise MissingSignature(f"{SIGNATURE} and {TIMESTAMP} headers are required")
        millis = unix_digits(timestamp)
        if millis is None:
            raise InvalidSignature(f"{TIMESTAMP} is not a unix time in milliseconds")
        check_window(millis / 1000, request.received_at, self.settings["tolerance"])
        uri = signed_uri(request.url, self.settings.get("public_url"))
        # bytes, not text: the body is signed as received, whatever its encoding
        message = (request.method.upper() + uri).encode() + request.body + timestamp.encode()
        expected = [
            base64.b64encode(hmac.new(s.encode(), message, hashlib.sha256).digest())
            for s in self.settings["secret"]
        ]
        if not any_digest_matches(expected, [signature.encode()]):
            raise InvalidSignature("signature does not match")

    def parse(self, request: InboundRequest) -> list[Event]:
        payload = parse_json(request.body)
        if not isinstance(payload, list):
            raise MalformedPayload("a HubSpot webhook body is a JSON array of events")
        if not payload:
            raise MalformedPayload("the batch holds no events")
        headers = kept_headers(request.headers)
        return [self._event(item, i, request, headers) for i, item in enumerate(payload)]

    def _event(
        self, item: Any, index: int, request: InboundRequest, headers: dict[str, str]
    ) -> Event:
        if not isinstance(item, dict):
            raise MalformedPayload(f"event [{index}] is not an object")
        event_id = _event_id(item, index)
        event_type = item.get("subscriptionType")
        if not isinstance(event_type, str) or not event_type:
            raise MalformedPayload(f"event [{index}] has no subscriptionType")
        return Event(
            self.name,
            event_id,
            event_type,
            _millis_to_seconds(item.get("occurredAt"), index),
            request.received_at,
            item,
            headers,
        )


def _id_part(value: Any) -> bool:
    """HubSpot sends integers; a string is tolerated, nothing else is an id."""
    return isinstance(value, int | str) and not isinstance(value, bool) and value != ""


def _event_id(item: dict[str, Any], index: int) -> str:
    """``portalId:subscriptionId:eventId``: HubSpot says ``eventId`` "is not guaranteed to
    be unique", and one app installed in several portals (or one change seen by several
    subscriptions) repeats it, so by ``eventId`` alone a second portal's event was dropped
    as a duplicate. All three stay the same on HubSpot's retries (``attemptNumber`` does
    not); a part the event lacks is left out."""
    if not _id_part(item.get("eventId")):
        raise MalformedPayload(f"event [{index}] has no eventId", code="missing_event_id")
    parts = [item.get(k) for k in ("portalId", "subscriptionId", "eventId")]
    return ":".join(str(p) for p in parts if _id_part(p))


def _millis_to_seconds(value: Any, index: int) -> float:
    """``occurredAt`` is always milliseconds here (no guessing by magnitude)."""
    if isinstance(value, str):
        value = unix_digits(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedPayload(f"event [{index}] has no valid occurredAt")
    try:
        seconds = value / 1000
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds):
        raise MalformedPayload(f"event [{index}] has no valid occurredAt")
    return seconds
