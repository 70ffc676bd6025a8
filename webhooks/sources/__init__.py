"""Inbound verifiers by kind: adding a kind is one module plus one line here."""

from __future__ import annotations

from webhooks.sources.base import Event, InboundRequest, Source
from webhooks.sources.hmac import HmacSource
from webhooks.sources.hubspot import HubSpotSource
from webhooks.sources.standard_webhooks import StandardWebhooksSource
from webhooks.sources.stripe import StripeSource

SOURCE_KINDS: dict[str, type[Source]] = {
    s.kind: s for s in (StripeSource, StandardWebhooksSource, HubSpotSource, HmacSource)
}

__all__ = ["Event", "InboundRequest", "Source", "SOURCE_KINDS"]
