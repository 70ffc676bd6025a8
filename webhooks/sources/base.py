"""The source (inbound verifier) interface: one module per kind implements it.

A source gets the raw request as plain data (:class:`InboundRequest`), checks its
signature (``verify``) and turns the body into one or more :class:`Event`\\ s (``parse``).
Both raise :class:`webhooks.errors.ApiError` subclasses, which become precise 4xx answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from marshmallow import Schema

from worker.model import Event

__all__ = ["DROPPED_HEADERS", "Event", "InboundRequest", "Source", "kept_headers"]


@dataclass(frozen=True)
class InboundRequest:
    """What a verifier may look at: nothing Flask-specific, so verifiers test alone."""

    method: str
    #: the full URL as the server saw it (scheme, host, path, query) for a source that signs
    #: it (``Source.needs_url``); only the path for the others (building it costs ~5%)
    url: str
    headers: Mapping[str, str]  # case-insensitive lookups: use .get() on a werkzeug Headers
    body: bytes
    received_at: float


class Source:
    """Base of the per-kind verifiers; the config's ``sources.<name>`` builds one."""

    kind: ClassVar[str]
    #: marshmallow schema of this kind's config block (besides ``kind``)
    schema: ClassVar[type[Schema]]
    #: whether ``verify`` needs the full request URL (HubSpot signs it)
    needs_url: ClassVar[bool] = False

    def __init__(self, name: str, settings: Mapping[str, Any]):
        self.name = name
        self.settings = settings

    def verify(self, request: InboundRequest) -> None:
        """Raise InvalidSignature / StaleTimestamp unless the request is authentic."""
        raise NotImplementedError

    def parse(self, request: InboundRequest) -> list[Event]:
        """The events in the (verified) body; raise MalformedPayload when it has none."""
        raise NotImplementedError


#: headers never stored with an event (signatures are not secrets, but nothing needs them)
DROPPED_HEADERS = frozenset(
    {
        "authorization",
        "cookie",
        "stripe-signature",
        "webhook-signature",
        "x-hubspot-signature-v3",
        "x-hubspot-signature",
        "x-signature",
        "x-hub-signature-256",
    }
)


def kept_headers(headers: Mapping[str, str], extra_dropped: frozenset[str] = frozenset()) -> dict:
    dropped = DROPPED_HEADERS | extra_dropped
    return {k.lower(): v for k, v in headers.items() if k.lower() not in dropped}
