"""Property tests: whatever arrives, a verifier answers with an ApiError (a 4xx) or
accepts; any other exception would be a 500. And what a sender's library signs is
always accepted, whatever the body."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.sources_support import (
    HMAC_SECRET,
    HMAC_SETTINGS,
    HUBSPOT_SECRET,
    HUBSPOT_URL,
    STRIPE_SECRET,
    SW_SECRET,
    hmac_headers,
    hubspot_headers,
    make_source,
    request,
    stripe_headers,
    sw_headers,
)
from webhooks.errors import ApiError
from webhooks.sources import Event

SOURCES = {
    "stripe": make_source("stripe", secret=STRIPE_SECRET),
    "standard-webhooks": make_source("standard-webhooks", secret=SW_SECRET),
    "hubspot": make_source("hubspot", secret=HUBSPOT_SECRET),
    "hubspot-proxied": make_source(
        "hubspot", secret=HUBSPOT_SECRET, public_url="https://hooks.example.com"
    ),
    "hmac": make_source("hmac", secret=HMAC_SECRET, **HMAC_SETTINGS),
}
HEADER_NAMES = [
    "Stripe-Signature",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "X-HubSpot-Signature-v3",
    "X-HubSpot-Request-Timestamp",
    "X-Signature",
]
#: keys the parsers look for, so random JSON reaches past "no id"
KEYS = ["id", "type", "created", "eventId", "subscriptionType", "occurredAt",
        "event_id", "event", "at", "data"]  # fmt: skip

RUNS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**18, max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), inner, max_size=6)
    ),
    max_leaves=20,
)
event_like = st.fixed_dictionaries({}, optional={k: json_values for k in KEYS})
json_bodies = st.one_of(json_values, event_like, st.lists(event_like, max_size=4)).map(
    lambda v: json.dumps(v).encode()
)
bodies = st.binary(max_size=512) | json_bodies | st.sampled_from([b"[" * 50_000, b"{}", b""])


def fresh_seconds() -> st.SearchStrategy[str]:
    """Timestamps near now (seconds or ms), so checks get past the window."""
    return st.integers(-400, 400).map(lambda d: str(int(time.time()) + d)) | st.integers(
        -400_000, 400_000
    ).map(lambda d: str(int(time.time() * 1000) + d))


header_values = (
    st.text(max_size=120)
    | fresh_seconds()
    | st.sampled_from(
        ["t=1,v1=00", "v1,", "v1abc", "v1,!!!", "sha256=", "t=²,v1=0", "nan", "inf", "1e400"]
    )
)
headers = st.dictionaries(st.sampled_from(HEADER_NAMES), header_values, max_size=7)
urls = st.sampled_from(
    [HUBSPOT_URL, "http://10.0.0.7:8000/webhooks/hubspot?a=%3A", "http://[::1/x", ""]
) | st.text(max_size=60)


def answers_only_with_api_errors(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except ApiError as error:
        assert 400 <= error.status < 500
        return None


@RUNS
@given(kind=st.sampled_from(sorted(SOURCES)), body=bodies, headers=headers, url=urls)
def test_verify_on_anything_raises_only_api_errors(kind, body, headers, url):
    source = SOURCES[kind]
    answers_only_with_api_errors(lambda: source.verify(request(body, headers, url=url)))


@RUNS
@given(kind=st.sampled_from(sorted(SOURCES)), body=bodies, headers=headers)
def test_parse_on_anything_raises_only_api_errors(kind, body, headers):
    source = SOURCES[kind]
    events = answers_only_with_api_errors(lambda: source.parse(request(body, headers)))
    for event in events or []:
        assert isinstance(event, Event)
        assert isinstance(event.id, str) and event.id
        assert isinstance(event.type, str) and event.type
        assert isinstance(event.occurred_at, float)


texts = st.text(max_size=300)  # what the libraries sign: text, sent as UTF-8


@RUNS
@given(text=texts)
def test_stripe_accepts_any_body_stripe_signs(text):
    body = text.encode()
    SOURCES["stripe"].verify(request(body, stripe_headers(body)))


@RUNS
@given(text=texts, msg_id=st.text("abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1))
def test_standard_webhooks_accepts_any_body_the_package_signs(text, msg_id):
    body = text.encode()
    SOURCES["standard-webhooks"].verify(request(body, sw_headers(body, msg_id=msg_id)))


@RUNS
@given(text=texts, query=st.text("abc=&:/@!$'()*,;", max_size=20))
def test_hubspot_accepts_any_body_hubspot_signs(text, query):
    body = text.encode()
    uri = HUBSPOT_URL + (f"?{query}" if query else "")
    SOURCES["hubspot"].verify(request(body, hubspot_headers(body, uri=uri), url=uri))


@RUNS
@given(text=texts)
def test_hmac_accepts_any_body_signed_with_the_secret(text):
    body = text.encode()
    SOURCES["hmac"].verify(request(body, hmac_headers(body)))


@RUNS
@given(body=bodies, headers=headers)
def test_signed_garbage_still_parses_to_events_or_a_400(body, headers):
    """A genuine signature on a nonsense body: verify passes, parse answers 400 or events."""
    for kind, signed in [
        ("hmac", hmac_headers(body)),
        ("stripe", stripe_headers(body) if _utf8(body) else None),
        ("standard-webhooks", sw_headers(body) if _utf8(body) else None),
    ]:
        if signed is None:
            continue
        req = request(body, {**headers, **signed})
        SOURCES[kind].verify(req)
        answers_only_with_api_errors(lambda: SOURCES[kind].parse(req))  # noqa: B023


def _utf8(body: bytes) -> bool:
    try:
        body.decode()
    except UnicodeDecodeError:
        return False
    return True
