"""Ingest answers: every bad input gets a precise 4xx JSON error; Redis down is a 503."""

from __future__ import annotations

import base64
import io
import json
import time

import pytest
import redis as redis_lib

from config.loader import load_config
from tests.helpers import (
    TEST_CONFIG,
    RedisServer,
    everything_in,
    fixture_body,
    hmac_headers,
    make_settings,
    stripe_headers,
    with_changes,
)
from tests.ops.support import OPS
from worker.queue import Queue


def error_code(response) -> str:
    assert response.is_json, response.data
    return response.get_json()["error"]["code"]


def test_wrong_secret_is_rejected(client):
    body = fixture_body("stripe/payment_intent.succeeded.json")
    response = client.post(
        "/webhooks/stripe", data=body, headers=stripe_headers(body, secret="whsec_someone_else")
    )
    assert (response.status_code, error_code(response)) == (401, "invalid_signature")


def test_tampered_body_is_rejected(client):
    body = fixture_body("stripe/payment_intent.succeeded.json")
    headers = stripe_headers(body)
    response = client.post("/webhooks/stripe", data=body.replace(b"4900", b"9900"), headers=headers)
    assert (response.status_code, error_code(response)) == (401, "invalid_signature")


def test_missing_signature_is_rejected(client):
    response = client.post(
        "/webhooks/stripe", data=b"{}", headers={"Content-Type": "application/json"}
    )
    assert (response.status_code, error_code(response)) == (401, "missing_signature")


@pytest.mark.parametrize("offset", [-301, 301])
def test_stale_or_future_timestamp_is_rejected(client, offset):
    body = fixture_body("stripe/payment_intent.succeeded.json")
    headers = stripe_headers(body, timestamp=int(time.time()) + offset)
    response = client.post("/webhooks/stripe", data=body, headers=headers)
    assert (response.status_code, error_code(response)) == (401, "stale_timestamp")


def test_body_over_the_limit_is_413(client):
    body = b'{"pad": "' + b"x" * (70 * 1024) + b'"}'
    response = client.post("/webhooks/stripe", data=body, headers=stripe_headers(body))
    assert (response.status_code, error_code(response)) == (413, "payload_too_large")
    # the limit, said alike whether the size came in a Content-Length or as chunks
    said = "the body is over 65536 bytes"
    assert response.get_json()["error"]["message"] == said
    assert _chunked(client, body).get_json()["error"]["message"] == said


def _chunked(client, body: bytes):
    """Posted as a chunked body is served: no Content-Length, the stream ends by itself."""
    return client.post(
        "/webhooks/stripe",
        input_stream=io.BytesIO(body),
        headers=stripe_headers(body),
        environ_overrides={"wsgi.input_terminated": True, "CONTENT_LENGTH": ""},
    )


def test_chunked_body_over_the_limit_is_413_not_a_cut_body(client):
    # werkzeug cuts a chunked body at MAX_CONTENT_LENGTH; the cut body then failed the
    # signature check (401 invalid_signature) instead of being refused as too large
    body = b'{"pad": "' + b"x" * (70 * 1024) + b'"}'
    response = _chunked(client, body)
    assert (response.status_code, error_code(response)) == (413, "payload_too_large")


def test_body_one_byte_over_the_limit_is_413_and_at_the_limit_is_read(client):
    pad = b"x" * (64 * 1024 - len(b'{"pad": ""}'))
    at_limit = b'{"pad": "' + pad + b'"}'
    assert len(at_limit) == 64 * 1024
    over = b'{"pad": "' + pad + b'x"}'
    for send in (_chunked, _with_length):
        assert error_code(send(client, over)) == "payload_too_large"
        # read whole, so the signature holds: the missing event id is what it refuses
        assert error_code(send(client, at_limit)) == "missing_event_id"


def _with_length(client, body: bytes):
    return client.post("/webhooks/stripe", data=body, headers=stripe_headers(body))


def test_signed_malformed_json_is_400(client):
    body = b'{"id": "evt_1", "type": '
    response = client.post("/webhooks/stripe", data=body, headers=stripe_headers(body))
    assert (response.status_code, error_code(response)) == (400, "malformed_json")


def _nested(depth: int) -> dict:
    inner: dict = {"end": True}
    for _ in range(depth - 1):
        inner = {"n": inner}
    return inner


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"id": "\ud800evt"}, "lone UTF-16 surrogate"),  # a 500: the id could not be stored
        ({"extra": float("nan")}, "NaN is not a JSON number"),  # stored, then invalid JSON
        ({"extra": "RAW-1e400"}, "too large for a JSON number"),  # infinity, as NaN
        ({"extra": _nested(100)}, "deeper than 100 levels"),  # a 500 at ~980, ops views at ~480
    ],
    ids=["surrogate", "nan", "1e400", "deep"],
)
def test_json_that_cannot_be_stored_and_shown_is_400_not_500(client, redis, change, why):
    body = with_changes("stripe/payment_intent.succeeded.json", **change)
    body = body.replace(b'"RAW-1e400"', b"1e400")  # a number JSON reads as infinity
    response = client.post("/webhooks/stripe", data=body, headers=stripe_headers(body))
    assert (response.status_code, error_code(response)) == (400, "malformed_json"), body[:80]
    assert why in response.get_json()["error"]["message"]
    deep_enough = with_changes("stripe/payment_intent.succeeded.json", extra=_nested(98))
    ok = client.post("/webhooks/stripe", data=deep_enough, headers=stripe_headers(deep_enough))
    assert ok.status_code == 202, ok.get_json()


def test_event_without_id_is_400(client):
    body = json.dumps({"type": "invoice.paid", "created": int(time.time())}).encode()
    response = client.post("/webhooks/stripe", data=body, headers=stripe_headers(body))
    assert (response.status_code, error_code(response)) == (400, "missing_event_id")


@pytest.mark.parametrize(
    "created", [1e300, time.time() + 2 * 86400, -5], ids=["1e300", "in-2-days", "before-1970"]
)
def test_an_event_time_outside_1970_to_tomorrow_is_400_and_nothing_is_stored(
    client, redis, created
):
    body = with_changes("stripe/payment_intent.succeeded.json", id="evt_far", created=created)
    response = client.post("/webhooks/stripe", data=body, headers=stripe_headers(body))
    assert (response.status_code, error_code(response)) == (400, "invalid_time")
    assert "evt_far" in response.get_json()["error"]["message"]
    assert Queue(redis).load_event("stripe", "evt_far") is None


@pytest.mark.parametrize("scale", [1, 1e3, 1e6, 1e9])  # s, ms, us, ns
def test_an_hmac_time_in_any_unit_is_read_as_seconds(client, redis, scale):
    at = 1_763_894_112
    body = json.dumps(
        {"event_id": f"evt-unit-{scale:g}", "event": "address.changed", "at": at * scale}
    ).encode()
    response = client.post("/webhooks/portal", data=body, headers=hmac_headers(body))
    assert response.status_code in (200, 202), response.get_json()
    loaded = Queue(redis).load_event("portal", f"evt-unit-{scale:g}")
    assert loaded is not None and loaded[0].occurred_at == pytest.approx(at)


def test_unknown_source_is_404(client):
    response = client.post("/webhooks/nobody", data=b"{}")
    assert (response.status_code, error_code(response)) == (404, "unknown_source")


def test_wrong_method_is_a_json_405(client):
    response = client.get("/webhooks/stripe")
    assert (response.status_code, error_code(response)) == (405, "method_not_allowed")


def test_hmac_source_accepts_a_signed_portal_event(client, redis):
    body = fixture_body("hmac/portal.address_changed.json")
    response = client.post("/webhooks/portal", data=body, headers=hmac_headers(body))
    assert response.status_code == 202
    assert response.get_json()["event_ids"] == ["portal-evt-000912"]
    event, tasks = Queue(redis).load_event("portal", "portal-evt-000912")  # type: ignore[misc]
    assert event.type == "address.changed"
    assert event.occurred_at == 1795428931.0  # 2026-11-23T10:15:31Z
    assert len(tasks) == 1


def test_hmac_source_rejects_a_bad_signature(client):
    body = fixture_body("hmac/portal.address_changed.json")
    response = client.post(
        "/webhooks/portal", data=body, headers=hmac_headers(body, secret="not-the-secret")
    )
    assert (response.status_code, error_code(response)) == (401, "invalid_signature")


def test_signature_headers_are_not_stored_with_the_event(client, redis):
    body = with_changes("stripe/charge.succeeded.json", id="evt_headers")
    client.post("/webhooks/stripe", data=body, headers=stripe_headers(body))
    event, _ = Queue(redis).load_event("stripe", "evt_headers")  # type: ignore[misc]
    assert "stripe-signature" not in event.headers


def test_authorization_and_cookie_headers_are_not_stored_nor_shown(private_client, private_db):
    basic = "Basic " + base64.b64encode(b"sender:basic-pass-never-stored").decode()
    # werkzeug's test client sends only its own jar's cookies (a Cookie header is dropped)
    private_client.set_cookie("s", "cookie-value-never-stored")
    body = with_changes("stripe/payment_intent.succeeded.json", id="evt_credentials")
    headers = {**stripe_headers(body), "Authorization": basic}
    assert private_client.post("/webhooks/stripe", data=body, headers=headers).status_code == 202
    event, _ = Queue(private_db).load_event("stripe", "evt_credentials")  # type: ignore[misc]
    assert "content-type" in event.headers  # the others are kept, lower-cased
    assert not {"authorization", "cookie"} & set(event.headers)
    shown = private_client.get("/ops/events/stripe/evt_credentials", headers=OPS).get_json()
    assert shown["event"]["headers"] == event.headers
    stored = everything_in(private_db)
    for value in (basic.split()[1], "cookie-value-never-stored"):
        assert value not in stored
        assert value not in json.dumps(shown)


def test_redis_down_is_503_and_nothing_is_half_queued(tmp_path, sandbox):
    from webhooks import create_app

    server = RedisServer(tmp_path)
    app = create_app(make_settings(server.url), load_config(TEST_CONFIG))
    client = app.test_client()
    server.start()  # after what may fail: nothing below leaves it running
    body = with_changes("stripe/payment_intent.succeeded.json", id="evt_redis_down")
    server.stop("kill")
    try:
        response = client.post("/webhooks/stripe", data=body, headers=stripe_headers(body))
        assert (response.status_code, error_code(response)) == (503, "queue_unavailable")
        server.start()  # same port, same AOF
        import redis as redis_lib

        left = redis_lib.Redis.from_url(server.url).keys("sb:*")
        assert [k for k in left if not k.startswith(b"sb:m:")] == []  # metrics may count it
        retry = client.post("/webhooks/stripe", data=body, headers=stripe_headers(body))
        assert retry.status_code == 202  # the sender's retry is accepted, not a duplicate
    finally:
        server.stop()


def test_healthz_and_readyz(client, worker):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    detail = ready.get_json()["detail"]
    assert detail["redis"] == "ok"
    assert detail["seconds_since_heartbeat"] < 60


def test_readyz_is_not_ready_without_a_worker_heartbeat(redis_server, private_db, monkeypatch):
    from webhooks import create_app

    # database 7: no worker beats there (the session's worker would beat again on db 0
    # between a delete of its heartbeat and the request)
    monkeypatch.setenv("SANDBOX_URL", "http://127.0.0.1:9")
    settings = make_settings(redis_server.url.rsplit("/", 1)[0] + "/7")
    client = create_app(settings, load_config(TEST_CONFIG)).test_client()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert "heartbeat" in response.get_json()["detail"]["reason"]


@pytest.mark.parametrize(
    ("query", "signed"),
    [
        ("tag=caf%C3%A9", "tag=caf%C3%A9"),
        ("f%5Bsrc%5D=hs&x=%7E", "f%5Bsrc%5D=hs&x=%7E"),
        ("a=b", "a=b"),
        ("p=%2Fx", "p=/x"),  # one of the 12 escapes HubSpot decodes before signing
    ],
)
def test_hubspot_is_verified_against_the_url_as_sent_escapes_and_all(
    redis_server, redis, tmp_path, query, signed
):
    # the URL was werkzeug's decoded one (café, ~): HubSpot signs the escapes it does not
    # decode as sent, so every delivery to such a target URL was refused as invalid
    from tests.unit.sources_support import hubspot_headers

    app = _hubspot_app(redis_server, tmp_path)
    body = fixture_body("hubspot/contact.propertyChange.json")
    path = f"/webhooks/hubspot?{query}"
    headers = hubspot_headers(body, uri=f"http://localhost/webhooks/hubspot?{signed}")
    answer = app.test_client().post(path, data=body, headers=headers)
    assert answer.status_code == 200, answer.get_json()  # verified; no rule: ignored


def test_a_hubspot_batch_is_stored_in_one_round(redis_server, redis, tmp_path):
    # one round per event made a 100-event batch 100 round trips, and with replicas 100
    # WAITs, against HubSpot's 5 s timeout; a duplicate inside the batch is still one
    from tests.unit.sources_support import hubspot_headers

    app = _hubspot_app(redis_server, tmp_path)
    batch = json.loads(fixture_body("hubspot/contact.propertyChange.json"))
    body = json.dumps([*batch, batch[0]]).encode()  # its first event twice
    commit = app.extensions["switchboard"].commit
    before = commit.rounds
    answer = app.test_client().post(
        "/webhooks/hubspot",
        data=body,
        headers=hubspot_headers(body, uri="http://localhost/webhooks/hubspot"),
    )
    assert answer.status_code == 200, answer.get_json()
    assert commit.rounds - before == 1
    assert len(answer.get_json()["event_ids"]) == 3 and len(answer.get_json()["duplicates"]) == 1


def _hubspot_app(redis_server, tmp_path):
    """An app with one HubSpot source and no rules (what it stores is "ignored")."""
    from tests.unit.sources_support import HUBSPOT_SECRET
    from webhooks import create_app

    config = tmp_path / "hubspot.yaml"
    config.write_text(
        f"sources:\n  hubspot: {{kind: hubspot, secret: {HUBSPOT_SECRET}}}\n"
        "vendors: {}\nrules: []\n"
    )
    return create_app(make_settings(redis_server.url), load_config(config))


def test_a_get_on_a_webhook_url_says_to_post(client):
    # a newcomer's curl without -X POST got a bare 405 with no Allow header
    answer = client.get("/webhooks/stripe")
    assert (answer.status_code, error_code(answer)) == (405, "method_not_allowed")
    assert "POST" in answer.headers["Allow"] and answer.get_json()["error"]["message"] == "use POST"


def test_a_get_on_a_webhook_url_is_counted_and_logged_as_a_refused_webhook(client, caplog):
    # a sender misconfigured to GET was in neither /metrics nor the webhook log lines
    import logging

    with caplog.at_level(logging.INFO, logger="switchboard.web"):
        assert client.get("/webhooks/stripe").status_code == 405
        assert client.get("/ops/stats").status_code != 405  # not a webhook URL: not counted
    [line] = [r for r in caplog.records if r.getMessage() == "webhook rejected"]
    assert (line.sb["source"], line.sb["reason"]) == ("stripe", "method_not_allowed")
    text = client.get("/metrics").get_data(as_text=True)
    counted = 'switchboard_webhooks_rejected_total{reason="method_not_allowed",source="stripe"}'
    assert f"{counted} 1.0" in text


def test_a_timestamp_in_milliseconds_gets_a_hint(client):
    body = fixture_body("stripe/payment_intent.succeeded.json")
    headers = stripe_headers(body, timestamp=int(time.time() * 1000))
    answer = client.post("/webhooks/stripe", data=body, headers=headers)
    assert error_code(answer) == "stale_timestamp"
    assert "milliseconds" in answer.get_json()["error"]["message"]


def test_readyz_is_not_ready_on_a_redis_that_may_evict_keys(tmp_path, monkeypatch):
    from tests.helpers import RedisServer
    from webhooks import create_app
    from worker import keys

    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        monkeypatch.setenv("SANDBOX_URL", "http://127.0.0.1:9")
        client = create_app(make_settings(server.url), load_config(TEST_CONFIG)).test_client()
        redis = redis_lib.Redis.from_url(server.url)
        redis.hset(keys.HEARTBEATS, "w1", time.time())  # a worker beats: that is not it
        redis.config_set("maxmemory", "100mb")
        redis.config_set("maxmemory-policy", "volatile-lru")  # a managed Redis's default
        response = client.get("/readyz")
        assert response.status_code == 503
        assert "noeviction" in response.get_json()["detail"]["reason"]
        redis.config_set("maxmemory-policy", "noeviction")
        assert client.get("/readyz").status_code == 200
    finally:
        server.stop()


def test_readyz_stays_ready_for_a_redis_user_that_may_not_run_info(tmp_path, monkeypatch):
    from tests.helpers import RedisServer
    from webhooks import create_app
    from worker import keys

    monkeypatch.setenv("SANDBOX_URL", "http://127.0.0.1:9")
    server = RedisServer(tmp_path / "redis")
    limited = server.url.replace("redis://", "redis://limited:pw@")
    client = create_app(make_settings(limited), load_config(TEST_CONFIG)).test_client()
    server.start()
    try:
        admin = redis_lib.Redis.from_url(server.url)
        admin.acl_setuser("limited", enabled=True, passwords=["+pw"], keys=["*"],
                          commands=["+@all", "-info"])  # fmt: skip
        admin.hset(keys.HEARTBEATS, "w1", time.time())
        response = client.get("/readyz")
        assert response.status_code == 200, response.get_json()  # not "unreachable"
    finally:
        server.stop()
