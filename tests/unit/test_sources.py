"""The four source verifiers against the senders' own signing libraries and the shared
fixture bodies: accepted when genuine, rejected with the right error class and code."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import pytest
import stripe
from hubspot.utils.signature import Signature
from marshmallow import ValidationError
from standardwebhooks import Webhook

from config.errors import ConfigError
from config.loader import load_config
from tests.unit.sources_support import (
    HMAC_OLD_SECRET,
    HMAC_SECRET,
    HMAC_SETTINGS,
    HUBSPOT_OLD_SECRET,
    HUBSPOT_SECRET,
    HUBSPOT_URL,
    STRIPE_OLD_SECRET,
    STRIPE_SECRET,
    SW_OLD_SECRET,
    SW_SECRET,
    fixture,
    fixtures,
    hmac_headers,
    hubspot_headers,
    json_body,
    make_source,
    request,
    stripe_headers,
    sw_headers,
)
from webhooks.errors import (
    ApiError,
    InvalidSignature,
    MalformedPayload,
    MissingSignature,
    StaleTimestamp,
)
from webhooks.sources import SOURCE_KINDS
from webhooks.sources.hubspot import signed_uri


def rejected(source, req, error: type[ApiError], code: str) -> ApiError:
    with pytest.raises(error) as caught:
        source.verify(req)
    assert caught.value.code == code
    assert caught.value.status == 401
    return caught.value


def test_fixtures_are_where_the_tests_look():
    assert len(fixtures("stripe")) == 4
    assert fixtures("hubspot") and fixtures("standard-webhooks") and fixtures("hmac")


def test_every_kind_is_registered():
    assert set(SOURCE_KINDS) == {"stripe", "standard-webhooks", "hubspot", "hmac"}


# == stripe ============================================================================
@pytest.fixture
def stripe_source():
    return make_source("stripe", secret=STRIPE_SECRET)


@pytest.mark.parametrize("path", fixtures("stripe"))
def test_stripe_accepts_what_stripe_signs_and_parses_the_event(stripe_source, path):
    body = fixture(path)
    req = request(body, stripe_headers(body))
    stripe_source.verify(req)
    # Stripe's own verifier agrees with ours on the very same request
    expected = stripe.Webhook.construct_event(
        body.decode(), req.headers["Stripe-Signature"], STRIPE_SECRET
    )
    [event] = stripe_source.parse(req)
    assert (event.id, event.type) == (expected["id"], expected["type"])
    assert event.occurred_at == float(expected["created"])
    assert event.type == Path(path).stem
    assert "stripe-signature" not in event.headers


def test_stripe_rejects_the_wrong_secret(stripe_source):
    body = fixture("stripe/invoice.paid.json")
    req = request(body, stripe_headers(body, secret="whsec_someone_else"))
    rejected(stripe_source, req, InvalidSignature, "invalid_signature")


def test_stripe_rejects_a_tampered_body(stripe_source):
    body = fixture("stripe/invoice.paid.json")
    headers = stripe_headers(body)
    tampered = body.replace(b"4900", b"9900", 1)
    rejected(stripe_source, request(tampered, headers), InvalidSignature, "invalid_signature")


def test_stripe_rejects_a_missing_header(stripe_source):
    body = fixture("stripe/invoice.paid.json")
    rejected(stripe_source, request(body, {}), MissingSignature, "missing_signature")


@pytest.mark.parametrize("offset", [-301, -3600, 301, 3600], ids=["stale", "old", "future", "far"])
def test_stripe_rejects_timestamps_outside_the_tolerance(stripe_source, offset):
    body = fixture("stripe/invoice.paid.json")
    req = request(body, stripe_headers(body, at=int(time.time()) + offset))
    rejected(stripe_source, req, StaleTimestamp, "stale_timestamp")


def test_stripe_tolerance_is_configurable():
    source = make_source("stripe", secret=STRIPE_SECRET, tolerance=30)
    body = fixture("stripe/invoice.paid.json")
    req = request(body, stripe_headers(body, at=int(time.time()) - 60))
    rejected(source, req, StaleTimestamp, "stale_timestamp")


def test_stripe_accepts_the_old_secret_while_rotating():
    source = make_source("stripe", secret=[STRIPE_SECRET, STRIPE_OLD_SECRET])
    body = fixture("stripe/charge.succeeded.json")
    source.verify(request(body, stripe_headers(body, secret=STRIPE_OLD_SECRET)))
    source.verify(request(body, stripe_headers(body, secret=STRIPE_SECRET)))


def test_stripe_accepts_any_of_several_v1_while_stripe_rolls_the_secret(stripe_source):
    body = fixture("stripe/charge.succeeded.json")
    now = int(time.time())
    old = stripe_headers(body, secret=STRIPE_OLD_SECRET, at=now)["Stripe-Signature"]
    new = stripe_headers(body, secret=STRIPE_SECRET, at=now)["Stripe-Signature"]
    header = old + "," + new.split(",", 1)[1]  # t=..,v1=<old>,v1=<new>
    stripe_source.verify(request(body, {"Stripe-Signature": header}))


def test_stripe_ignores_v0(stripe_source):
    body = fixture("stripe/charge.succeeded.json")
    signed = stripe_headers(body)["Stripe-Signature"]
    t, v1 = signed.split(",")
    v0_only = f"{t},v0={v1[3:]}"
    rejected(
        stripe_source,
        request(body, {"Stripe-Signature": v0_only}),
        InvalidSignature,
        "invalid_signature",
    )
    stripe_source.verify(request(body, {"Stripe-Signature": f"{t},v0=00ff,{v1}"}))


@pytest.mark.parametrize(
    "header", ["garbage", "t=abc,v1=00", "v1=00", "t=²³,v1=00", "t=1700000000", ",,,="]
)
def test_stripe_malformed_header_is_invalid_signature(stripe_source, header):
    req = request(b"{}", {"Stripe-Signature": header})
    rejected(stripe_source, req, InvalidSignature, "invalid_signature")


def test_stripe_reads_headers_case_insensitively(stripe_source):
    body = fixture("stripe/invoice.paid.json")
    value = stripe_headers(body)["Stripe-Signature"]
    stripe_source.verify(request(body, {"stripe-signature": value}))


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "malformed_json"),
        (json_body({"type": "invoice.paid", "created": 1}), "missing_event_id"),
        (json_body({"id": "evt_1", "created": 1}), "malformed_payload"),
        (json_body({"id": "evt_1", "type": "x", "created": "soon"}), "malformed_payload"),
        (json_body([{"id": "evt_1"}]), "malformed_payload"),
    ],
)
def test_stripe_parse_rejects_bodies_without_what_it_needs(stripe_source, body, code):
    with pytest.raises(MalformedPayload) as caught:
        stripe_source.parse(request(body, {}))
    assert (caught.value.status, caught.value.code) == (400, code)


# == standard-webhooks =================================================================
@pytest.fixture
def sw_source():
    return make_source("standard-webhooks", secret=SW_SECRET)


@pytest.mark.parametrize("path", fixtures("standard-webhooks"))
def test_standard_webhooks_accepts_what_the_package_signs(sw_source, path):
    body = fixture(path)
    now = int(time.time())
    req = request(body, sw_headers(body, msg_id="msg_31PkD0", at=now))
    sw_source.verify(req)
    # the reference verifier agrees
    Webhook(SW_SECRET).verify(body, dict(req.headers))
    [event] = sw_source.parse(req)
    assert event.id == "msg_31PkD0"
    assert event.type == json.loads(body)["type"] == Path(path).stem
    stated = json.loads(body)["timestamp"]  # when it happened, not this attempt's time
    assert event.occurred_at == dt.datetime.fromisoformat(stated).timestamp()
    assert event.payload == json.loads(body)
    assert "webhook-signature" not in event.headers


def test_standard_webhooks_event_time_is_the_bodys_not_the_attempts(sw_source):
    # webhook-timestamp is "updated every time an attempt is retried": by it, a retried
    # older event looked newer than one sent since, and overwrote its fields
    older = json_body({"type": "t", "timestamp": "2026-11-23T10:00:00Z", "data": {}})
    now = int(time.time())
    [retried] = sw_source.parse(request(older, sw_headers(older, at=now)))
    assert retried.occurred_at == dt.datetime(2026, 11, 23, 10, tzinfo=dt.UTC).timestamp()
    for body in (json_body({"type": "t", "data": {}}), json_body({"type": "t", "timestamp": "?"})):
        [event] = sw_source.parse(request(body, sw_headers(body, at=now)))
        assert event.occurred_at == float(now)  # no usable time in the body: the header's


def test_standard_webhooks_rejects_the_wrong_secret(sw_source):
    body = fixture("standard-webhooks/payment.received.json")
    req = request(body, sw_headers(body, secret=SW_OLD_SECRET))
    rejected(sw_source, req, InvalidSignature, "invalid_signature")


def test_standard_webhooks_rejects_a_tampered_body(sw_source):
    body = fixture("standard-webhooks/payment.received.json")
    headers = sw_headers(body)
    tampered = body.replace(b"49.00", b"0.01")
    rejected(sw_source, request(tampered, headers), InvalidSignature, "invalid_signature")


def test_standard_webhooks_rejects_a_changed_id(sw_source):
    body = fixture("standard-webhooks/payment.received.json")
    headers = {**sw_headers(body), "webhook-id": "msg_other"}
    rejected(sw_source, request(body, headers), InvalidSignature, "invalid_signature")


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_standard_webhooks_rejects_a_missing_header(sw_source, missing):
    body = fixture("standard-webhooks/payment.received.json")
    headers = {k: v for k, v in sw_headers(body).items() if k != missing}
    error = rejected(sw_source, request(body, headers), MissingSignature, "missing_signature")
    assert missing in error.message


@pytest.mark.parametrize(
    "offset", [-301, -86400, 301, 86400], ids=["stale", "old", "future", "far"]
)
def test_standard_webhooks_rejects_timestamps_outside_five_minutes(sw_source, offset):
    body = fixture("standard-webhooks/payment.received.json")
    req = request(body, sw_headers(body, at=int(time.time()) + offset))
    rejected(sw_source, req, StaleTimestamp, "stale_timestamp")


def test_standard_webhooks_accepts_the_old_secret_while_rotating():
    source = make_source("standard-webhooks", secret=[SW_SECRET, SW_OLD_SECRET])
    body = fixture("standard-webhooks/customer.address_changed.json")
    source.verify(request(body, sw_headers(body, secret=SW_OLD_SECRET)))
    source.verify(request(body, sw_headers(body, secret=SW_SECRET)))


def test_standard_webhooks_accepts_any_listed_signature_and_skips_other_versions(sw_source):
    body = fixture("standard-webhooks/customer.address_changed.json")
    now = int(time.time())
    old = sw_headers(body, secret=SW_OLD_SECRET, at=now)
    new = sw_headers(body, secret=SW_SECRET, at=now)
    listed = f"v2,bm90LXVzZWQ= {old['webhook-signature']} {new['webhook-signature']}"
    sw_source.verify(request(body, {**new, "webhook-signature": listed}))


@pytest.mark.parametrize("junk", ["junk", "v1,%%%", "v1,a,b", "v1,"])
@pytest.mark.parametrize("first", [True, False], ids=["junk-first", "junk-last"])
def test_standard_webhooks_junk_beside_a_valid_signature_does_not_hide_it(junk, first):
    # the package raised at the first entry it could not parse: a valid signature beside
    # it (or by the second secret while rotating) was refused as invalid_signature
    source = make_source("standard-webhooks", secret=[SW_OLD_SECRET, SW_SECRET])
    body = fixture("standard-webhooks/payment.received.json")
    headers = sw_headers(body, secret=SW_SECRET)
    good = headers["webhook-signature"]
    listed = f"{junk}  {good}" if first else f"{good} {junk}"
    source.verify(request(body, {**headers, "webhook-signature": listed}))


@pytest.mark.parametrize(
    "signature",
    ["v1abc", "v1,%%%not-base64", "v1,a,b", "v1,", "   ", "v1"],
)
def test_standard_webhooks_malformed_signature_is_401_not_500(sw_source, signature):
    body = fixture("standard-webhooks/payment.received.json")
    headers = {**sw_headers(body), "webhook-signature": signature}
    with pytest.raises(ApiError) as caught:
        sw_source.verify(request(body, headers))
    assert caught.value.status == 401


@pytest.mark.parametrize("timestamp", ["soon", "1.7e9", "nan", "-5", "١٧٠٠٠٠٠٠٠٠"])
def test_standard_webhooks_malformed_timestamp_is_invalid_signature(sw_source, timestamp):
    body = fixture("standard-webhooks/payment.received.json")
    headers = {**sw_headers(body), "webhook-timestamp": timestamp}
    rejected(sw_source, request(body, headers), InvalidSignature, "invalid_signature")


def test_standard_webhooks_body_that_is_not_utf8_is_a_400(sw_source):
    headers = sw_headers(b"{}")
    with pytest.raises(MalformedPayload) as caught:
        sw_source.verify(request(b"\xff\xfe{}", headers))
    assert caught.value.status == 400


@pytest.mark.parametrize(
    "secret",
    ["not-whsec", "whsec_", "whsec_!!!!", "whsec_abc$def", "c2VjcmV0", ["whsec_c2VjcmV0", "bad"]],
)
def test_standard_webhooks_secret_format_is_checked_by_the_schema(secret):
    with pytest.raises(ValidationError) as caught:
        SOURCE_KINDS["standard-webhooks"].schema().load({"secret": secret})
    assert "secret" in caught.value.messages


def test_standard_webhooks_bad_secret_is_a_config_problem_not_a_crash(tmp_path):
    config = tmp_path / "switchboard.yaml"
    config.write_text(
        "sources:\n  crm: {kind: standard-webhooks, secret: 'whsec_$$$'}\nvendors: {}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(config, env={})
    [problem] = caught.value.problems
    assert problem.path == "sources.crm.secret"
    assert "whsec_$$$" not in problem.message  # secrets are never echoed


def test_standard_webhooks_unpadded_secret_is_accepted():
    unpadded = SW_SECRET.rstrip("=")
    source = make_source("standard-webhooks", secret=unpadded)
    body = fixture("standard-webhooks/payment.received.json")
    source.verify(request(body, sw_headers(body, secret=SW_SECRET)))


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"nope", "malformed_json"),
        (json_body({"data": {}}), "malformed_payload"),
        (json_body(["payment.received"]), "malformed_payload"),
    ],
)
def test_standard_webhooks_parse_rejects_bodies_without_a_type(sw_source, body, code):
    with pytest.raises(MalformedPayload) as caught:
        sw_source.parse(request(body, sw_headers(body)))
    assert caught.value.code == code


def test_standard_webhooks_parse_without_an_id_is_missing_event_id(sw_source):
    body = fixture("standard-webhooks/payment.received.json")
    headers = {k: v for k, v in sw_headers(body).items() if k != "webhook-id"}
    with pytest.raises(MalformedPayload) as caught:
        sw_source.parse(request(body, headers))
    assert caught.value.code == "missing_event_id"


# == hubspot ===========================================================================
HUBSPOT_BATCH = "hubspot/contact.propertyChange.json"


@pytest.fixture
def hubspot_source():
    return make_source("hubspot", secret=HUBSPOT_SECRET)


def hubspot_request(body: bytes, **kwargs):
    return request(body, hubspot_headers(body, **kwargs), url=HUBSPOT_URL)


def test_hubspot_accepts_what_hubspot_signs_and_splits_the_batch(hubspot_source):
    body = fixture(HUBSPOT_BATCH)
    req = hubspot_request(body)
    hubspot_source.verify(req)
    # HubSpot's own validator agrees on the same request
    assert Signature.is_valid(
        req.headers["X-HubSpot-Signature-v3"],
        HUBSPOT_SECRET,
        body.decode(),
        HUBSPOT_URL,
        "POST",
        "v3",
        req.headers["X-HubSpot-Request-Timestamp"],
    )
    events = hubspot_source.parse(req)
    ids = ["62515:2417803:1834560123", "62515:2417803:1834560124", "62515:2417803:1834560125"]
    assert [e.id for e in events] == ids
    assert {e.type for e in events} == {"contact.propertyChange"}
    assert [e.payload["propertyName"] for e in events] == ["city", "address", "zip"]
    assert all(e.occurred_at == pytest.approx(1763894112.345) for e in events)
    assert all("x-hubspot-signature-v3" not in e.headers for e in events)


def test_hubspot_events_sharing_an_event_id_across_portals_are_two_events(hubspot_source):
    # HubSpot: eventId "is not guaranteed to be unique"; the second portal's event was
    # dropped as a duplicate of the first
    batch = json.loads(fixture(HUBSPOT_BATCH))[:1]
    other = {**batch[0], "portalId": 99999, "propertyValue": "Hull"}
    body = json.dumps([batch[0], other]).encode()
    first, second = hubspot_source.parse(hubspot_request(body))
    assert first.id != second.id and first.id.endswith(":1834560123")
    retried = json.dumps([{**batch[0], "attemptNumber": 3}]).encode()
    assert hubspot_source.parse(hubspot_request(retried))[0].id == first.id  # a retry: same


def test_hubspot_rejects_the_wrong_secret(hubspot_source):
    body = fixture(HUBSPOT_BATCH)
    req = hubspot_request(body, secret=HUBSPOT_OLD_SECRET)
    rejected(hubspot_source, req, InvalidSignature, "invalid_signature")


def test_hubspot_rejects_a_tampered_body(hubspot_source):
    body = fixture(HUBSPOT_BATCH)
    headers = hubspot_headers(body)
    tampered = body.replace(b"Manchester", b"Liverpool")
    req = request(tampered, headers, url=HUBSPOT_URL)
    rejected(hubspot_source, req, InvalidSignature, "invalid_signature")


def test_hubspot_rejects_another_uri_or_method(hubspot_source):
    body = fixture(HUBSPOT_BATCH)
    headers = hubspot_headers(body)
    other = request(body, headers, url=HUBSPOT_URL + "?x=1")
    rejected(hubspot_source, other, InvalidSignature, "invalid_signature")
    put = request(body, headers, url=HUBSPOT_URL, method="PUT")
    rejected(hubspot_source, put, InvalidSignature, "invalid_signature")


@pytest.mark.parametrize("missing", ["X-HubSpot-Signature-v3", "X-HubSpot-Request-Timestamp"])
def test_hubspot_rejects_a_missing_header(hubspot_source, missing):
    body = fixture(HUBSPOT_BATCH)
    headers = {k: v for k, v in hubspot_headers(body).items() if k != missing}
    req = request(body, headers, url=HUBSPOT_URL)
    rejected(hubspot_source, req, MissingSignature, "missing_signature")


@pytest.mark.parametrize(
    "offset", [-301, -86400, 301, 86400], ids=["stale", "old", "future", "far"]
)
def test_hubspot_rejects_timestamps_outside_five_minutes(hubspot_source, offset):
    body = fixture(HUBSPOT_BATCH)
    req = hubspot_request(body, at_ms=int((time.time() + offset) * 1000))
    rejected(hubspot_source, req, StaleTimestamp, "stale_timestamp")


def test_hubspot_timestamp_is_milliseconds_not_seconds(hubspot_source):
    body = fixture(HUBSPOT_BATCH)
    req = hubspot_request(body, at_ms=int(time.time()))  # seconds: 1970 in milliseconds
    rejected(hubspot_source, req, StaleTimestamp, "stale_timestamp")


def test_hubspot_accepts_the_old_secret_while_rotating():
    source = make_source("hubspot", secret=[HUBSPOT_SECRET, HUBSPOT_OLD_SECRET])
    body = fixture(HUBSPOT_BATCH)
    source.verify(hubspot_request(body, secret=HUBSPOT_OLD_SECRET))
    source.verify(hubspot_request(body, secret=HUBSPOT_SECRET))


def test_hubspot_behind_a_proxy_needs_public_url():
    """HubSpot signed https://hooks.example.com/...; we see the proxy's plain-http hop."""
    body = fixture(HUBSPOT_BATCH)
    headers = hubspot_headers(body, uri=HUBSPOT_URL + "?portal=62515")
    seen = "http://10.0.0.7:8000/webhooks/hubspot?portal=62515"
    plain = make_source("hubspot", secret=HUBSPOT_SECRET)
    rejected(plain, request(body, headers, url=seen), InvalidSignature, "invalid_signature")
    proxied = make_source("hubspot", secret=HUBSPOT_SECRET, public_url="https://hooks.example.com/")
    proxied.verify(request(body, headers, url=seen))


def test_hubspot_public_url_keeps_a_prefix_the_proxy_strips():
    body = fixture(HUBSPOT_BATCH)
    headers = hubspot_headers(body, uri="https://example.com/switchboard/webhooks/hubspot")
    source = make_source(
        "hubspot", secret=HUBSPOT_SECRET, public_url="https://example.com/switchboard"
    )
    source.verify(request(body, headers, url="http://web:8000/webhooks/hubspot"))


def test_hubspot_decodes_the_escapes_hubspot_decodes_before_signing(hubspot_source):
    body = fixture(HUBSPOT_BATCH)
    headers = hubspot_headers(body, uri=HUBSPOT_URL + "?next=a:b/c@d,e;f!g")
    seen = HUBSPOT_URL + "?next=a%3Ab%2Fc%40d%2ce%3Bf%21g"
    hubspot_source.verify(request(body, headers, url=seen))
    assert signed_uri(seen, None) == HUBSPOT_URL + "?next=a:b/c@d,e;f!g"
    assert signed_uri(HUBSPOT_URL + "?q=a%20b", None).endswith("?q=a%20b")  # not in the table


@pytest.mark.parametrize(
    "public_url",
    [
        "hooks.example.com",
        "ftp://hooks.example.com",
        "https://h.example.com/?a=1",
        "https://h.example.com/#x",
        "https://",
    ],
)
def test_hubspot_public_url_is_checked_by_the_schema(public_url):
    with pytest.raises(ValidationError) as caught:
        SOURCE_KINDS["hubspot"].schema().load({"secret": "s", "public_url": public_url})
    assert "public_url" in caught.value.messages


@pytest.mark.parametrize("timestamp", ["soon", "1.7e12", "", " "])
def test_hubspot_malformed_timestamp_is_401(hubspot_source, timestamp):
    body = fixture(HUBSPOT_BATCH)
    headers = {**hubspot_headers(body), "X-HubSpot-Request-Timestamp": timestamp}
    with pytest.raises(ApiError) as caught:
        hubspot_source.verify(request(body, headers, url=HUBSPOT_URL))
    assert caught.value.status == 401


def test_hubspot_element_without_event_id_is_missing_event_id(hubspot_source):
    batch = json.loads(fixture(HUBSPOT_BATCH))
    del batch[1]["eventId"]
    body = json_body(batch)
    with pytest.raises(MalformedPayload) as caught:
        hubspot_source.parse(hubspot_request(body))
    assert (caught.value.status, caught.value.code) == (400, "missing_event_id")
    assert "[1]" in caught.value.message


@pytest.mark.parametrize(
    "value",
    [{"eventId": 1, "subscriptionType": "contact.creation", "occurredAt": 1}, {}, "x", 1, None],
)
def test_hubspot_body_that_is_not_an_array_is_a_400(hubspot_source, value):
    with pytest.raises(MalformedPayload) as caught:
        hubspot_source.parse(hubspot_request(json_body(value)))
    assert caught.value.status == 400


@pytest.mark.parametrize(
    ("element", "code"),
    [
        ({"eventId": True, "subscriptionType": "a", "occurredAt": 1}, "missing_event_id"),
        ({"eventId": None, "subscriptionType": "a", "occurredAt": 1}, "missing_event_id"),
        ({"eventId": 1, "occurredAt": 1}, "malformed_payload"),
        ({"eventId": 1, "subscriptionType": "a"}, "malformed_payload"),
        ({"eventId": 1, "subscriptionType": "a", "occurredAt": "yesterday"}, "malformed_payload"),
        ("not an object", "malformed_payload"),
    ],
)
def test_hubspot_parse_rejects_incomplete_events(hubspot_source, element, code):
    with pytest.raises(MalformedPayload) as caught:
        hubspot_source.parse(hubspot_request(json_body([element])))
    assert caught.value.code == code


def test_hubspot_empty_batch_is_a_400(hubspot_source):
    with pytest.raises(MalformedPayload):
        hubspot_source.parse(hubspot_request(b"[]"))


# == hmac ==============================================================================
HMAC_FIXTURE = "hmac/portal.address_changed.json"


@pytest.fixture
def hmac_source():
    return make_source("hmac", secret=HMAC_SECRET, **HMAC_SETTINGS)


@pytest.mark.parametrize("prefix", ["", "sha256="])
def test_hmac_accepts_the_signature_with_or_without_prefix(hmac_source, prefix):
    body = fixture(HMAC_FIXTURE)
    req = request(body, hmac_headers(body, prefix=prefix))
    hmac_source.verify(req)
    [event] = hmac_source.parse(req)
    assert (event.id, event.type) == ("portal-evt-000912", "address.changed")
    assert event.occurred_at == dt.datetime(2026, 11, 23, 10, 15, 31, tzinfo=dt.UTC).timestamp()
    assert "x-signature" not in event.headers


def test_hmac_accepts_upper_case_hex(hmac_source):
    body = fixture(HMAC_FIXTURE)
    value = hmac_headers(body)["X-Signature"].upper()
    hmac_source.verify(request(body, {"X-Signature": value}))


def test_hmac_header_name_is_configurable_github_style():
    source = make_source(
        "hmac", secret=HMAC_SECRET, **{**HMAC_SETTINGS, "header": "X-Hub-Signature-256"}
    )
    body = fixture(HMAC_FIXTURE)
    headers = hmac_headers(body, header="X-Hub-Signature-256", prefix="sha256=")
    source.verify(request(body, headers))
    rejected(source, request(body, hmac_headers(body)), MissingSignature, "missing_signature")


def test_hmac_rejects_the_wrong_secret(hmac_source):
    body = fixture(HMAC_FIXTURE)
    req = request(body, hmac_headers(body, secret="guess"))
    rejected(hmac_source, req, InvalidSignature, "invalid_signature")


def test_hmac_rejects_a_tampered_body(hmac_source):
    body = fixture(HMAC_FIXTURE)
    req = request(body.replace(b"Manchester", b"Leeds"), hmac_headers(body))
    rejected(hmac_source, req, InvalidSignature, "invalid_signature")


@pytest.mark.parametrize("headers", [{}, {"X-Signature": ""}, {"X-Signature": "  "}])
def test_hmac_rejects_a_missing_header(hmac_source, headers):
    rejected(
        hmac_source, request(fixture(HMAC_FIXTURE), headers), MissingSignature, "missing_signature"
    )


def test_hmac_accepts_the_old_secret_while_rotating():
    source = make_source("hmac", secret=[HMAC_SECRET, HMAC_OLD_SECRET], **HMAC_SETTINGS)
    body = fixture(HMAC_FIXTURE)
    source.verify(request(body, hmac_headers(body, secret=HMAC_OLD_SECRET)))
    source.verify(request(body, hmac_headers(body, secret=HMAC_SECRET)))


@pytest.mark.parametrize(
    "payload",
    [
        {"event": "address.changed", "at": "2026-11-23T10:15:31Z"},
        {"event_id": "", "event": "address.changed"},
        {"event_id": None, "event": "address.changed"},
        {"event_id": {"nested": 1}, "event": "address.changed"},
        ["not", "an", "object"],
    ],
)
def test_hmac_body_without_an_id_is_missing_event_id(hmac_source, payload):
    body = json_body(payload)
    with pytest.raises(MalformedPayload) as caught:
        hmac_source.parse(request(body, hmac_headers(body)))
    assert (caught.value.status, caught.value.code) == (400, "missing_event_id")


def test_hmac_ids_with_surrounding_spaces_are_the_same_event(hmac_source):
    # " pe-x " passed the blank check stripped and was stored unstripped: a second event
    body = json_body({"event_id": " pe-x ", "event": " address.changed", "at": 1.7e9})
    [event] = hmac_source.parse(request(body, hmac_headers(body)))
    assert (event.id, event.type) == ("pe-x", "address.changed")


def test_hmac_occurred_at_defaults_to_receipt_time():
    settings = {k: v for k, v in HMAC_SETTINGS.items() if k != "occurred_at"}
    source = make_source("hmac", secret=HMAC_SECRET, **settings)
    body = fixture(HMAC_FIXTURE)
    req = request(body, hmac_headers(body), received_at=1_800_000_000.0)
    [event] = source.parse(req)
    assert event.occurred_at == 1_800_000_000.0


def test_hmac_template_failing_on_the_body_is_a_400_not_a_500():
    source = make_source(
        "hmac", secret=HMAC_SECRET, **{**HMAC_SETTINGS, "occurred_at": "{{ payload.at / 1000 }}"}
    )
    body = fixture(HMAC_FIXTURE)  # "at" is a string: str / int is a TypeError
    with pytest.raises(MalformedPayload):
        source.parse(request(body, hmac_headers(body)))


@pytest.mark.parametrize(
    "settings",
    [
        {"id": "{{ payload.", "type": "x"},
        {"type": "x"},
        {"id": "x", "type": "x", "header": "Bad Header"},
    ],
)
def test_hmac_config_errors_are_schema_errors(settings):
    with pytest.raises(ValidationError):
        SOURCE_KINDS["hmac"].schema().load({"secret": "s", **settings})
