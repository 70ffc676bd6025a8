"""HaloPSA connector against its simulator over real HTTP (no Celery involved here)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from config.errors import ConfigError
from config.loader import load_config
from worker.vendors import CONNECTORS, errors
from worker.vendors.base import VendorInstance
from worker.vendors.halopsa import HaloPSA

SECRET = "halo-demo-secret"


def make(sandbox, timeout: float = 2, **auth) -> HaloPSA:
    creds = {"client_id": "halo-demo-client", "client_secret": SECRET, **auth}
    instance = VendorInstance(
        name="halo", kind="halopsa", base_url=sandbox.base("halopsa"), auth=creds, timeout=timeout
    )
    return HaloPSA(instance)


@pytest.fixture
def halo(sandbox):
    connector = make(sandbox)
    yield connector
    connector.close()


def calls(sandbox, path: str) -> list[dict]:
    return [entry for entry in sandbox.log("halopsa") if entry["path"] == path]


def issued_tokens(sandbox) -> list[str]:
    return sandbox.http.get("/halopsa/_sim/tokens").json()


def sim_auth(sandbox, **values) -> None:
    sandbox.http.post("/halopsa/_sim/auth", json=values).raise_for_status()


def assert_no_secrets(exc: errors.VendorError, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret not in str(exc)
        assert secret not in (exc.excerpt or "")


def test_is_registered_by_kind():
    assert CONNECTORS["halopsa"] is HaloPSA


def test_update_client_changes_the_record(halo, sandbox):
    fields = {
        "name": "Acme Group",
        "colour": "#E83C4A",
        "inactive": False,
        "notes": "VIP",
        "toplevel_id": "2",
    }
    result = halo.apply("update_client", "42", fields)
    assert result["status"] in (200, 201)
    record = sandbox.record("halopsa", 42)
    assert {k: record[k] for k in fields} == {**fields, "toplevel_id": 2}


def test_update_body_is_an_array_with_the_integer_id(halo, sandbox):
    halo.apply("update_client", "42", {"inactive": False})
    assert calls(sandbox, "/api/Client")[0]["body"] == [{"id": 42, "inactive": False}]


def test_token_is_fetched_once_for_many_calls(halo, sandbox):
    for name in ("A", "B", "C"):
        halo.apply("update_client", 42, {"name": name})
    token_calls = calls(sandbox, "/auth/token")
    assert len(token_calls) == 1
    assert token_calls[0]["body"]["grant_type"] == "client_credentials"
    assert token_calls[0]["body"]["scope"] == "all"
    assert token_calls[0]["query"] == {}  # no tenant configured: none sent
    assert len(calls(sandbox, "/api/Client")) == 3


def test_concurrent_calls_share_one_token_fetch(halo, sandbox):
    sandbox.knobs("halopsa", latency_ms=100)  # keeps the token request in flight a while
    with ThreadPoolExecutor(max_workers=5) as pool:
        list(pool.map(lambda n: halo.apply("update_client", 42, {"notes": str(n)}), range(5)))
    assert len(calls(sandbox, "/auth/token")) == 1
    assert len(calls(sandbox, "/api/Client")) == 5


def test_tenant_travels_on_the_token_url(sandbox):
    make(sandbox, tenant="acme").apply("update_client", 42, {"name": "A"})
    assert calls(sandbox, "/auth/token")[0]["query"] == {"tenant": "acme"}


def test_revoked_token_is_refreshed_once_and_the_call_succeeds(halo, sandbox):
    halo.apply("update_client", 42, {"name": "Before"})
    sandbox.expire("halopsa")
    halo.apply("update_client", 42, {"name": "After"})
    assert sandbox.record("halopsa", 42)["name"] == "After"
    assert len(calls(sandbox, "/auth/token")) == 2
    assert len(calls(sandbox, "/api/Client")) == 3  # the one refused with 401 is retried


def test_token_is_renewed_before_it_expires(halo, sandbox):
    sim_auth(sandbox, token_lifetime=1)
    halo.apply("update_client", 42, {"name": "A"})
    time.sleep(1.1)
    halo.apply("update_client", 42, {"name": "B"})
    # a fresh token was fetched up front: no call was refused
    assert len(calls(sandbox, "/auth/token")) == 2
    assert len(calls(sandbox, "/api/Client")) == 2


def test_wrong_client_secret_is_auth_failed_without_the_secret(sandbox):
    with pytest.raises(errors.AuthFailed) as caught:
        make(sandbox, client_secret="wrong-secret-value").apply("update_client", 42, {"name": "X"})
    assert "invalid_client" in str(caught.value)
    assert_no_secrets(caught.value, ["wrong-secret-value"])
    assert calls(sandbox, "/api/Client") == []


def test_tokens_refused_after_a_refresh_are_auth_failed_without_secrets(halo, sandbox):
    sim_auth(sandbox, refuse_tokens=True)
    with pytest.raises(errors.AuthFailed) as caught:
        halo.apply("update_client", 42, {"name": "X"})
    assert len(calls(sandbox, "/auth/token")) == 2  # refreshed exactly once
    assert caught.value.status == 401
    assert_no_secrets(caught.value, [SECRET, *issued_tokens(sandbox)])


def test_unknown_client_is_not_found(halo):
    with pytest.raises(errors.NotFound) as caught:
        halo.apply("update_client", 999, {"name": "X"})
    assert caught.value.status == 404


def test_an_unknown_id_that_made_a_new_client_is_not_taken_as_applied(halo, sandbox):
    # I: an unknown id is refused; should Halo save it as a new client instead, its
    # answer names another id: that is no update of ours, and must not read as applied
    sim_auth(sandbox, create_unknown=True)
    with pytest.raises(errors.Rejected) as caught:
        halo.apply("update_client", 999, {"name": "X"})
    assert "saved client 44, not 999" in str(caught.value)
    halo.apply("update_client", 42, {"name": "Acme Group"})  # a known id still applies


def test_vendor_validation_error_is_rejected(halo, sandbox):
    with pytest.raises(errors.Rejected) as caught:
        halo.apply("update_client", 42, {"toplevel_id": 77})  # no such top level
    assert caught.value.status == 400
    assert "toplevel_id" in str(caught.value)
    assert sandbox.record("halopsa", 42)["toplevel_id"] == 1


@pytest.mark.parametrize(
    "fields",
    [
        {"colour": "red"},
        {"colour": "#12345"},
        {"inactive": "maybe"},
        {"toplevel_id": 4.5},
        {"toplevel_id": True},
        {"nickname": "x"},
    ],
)
def test_invalid_field_value_is_refused_before_any_call(halo, sandbox, fields):
    with pytest.raises(errors.InvalidFields):
        halo.apply("update_client", 42, fields)
    assert sandbox.log("halopsa") == []


def test_non_numeric_target_is_refused_before_any_call(halo, sandbox):
    with pytest.raises(errors.InvalidFields):
        halo.apply("update_client", "acme", {"name": "X"})
    assert sandbox.log("halopsa") == []


def test_simulator_enforces_types_and_colour(sandbox):
    http = httpx.Client(base_url=sandbox.base("halopsa"))
    token = http.post(
        "/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "halo-demo-client",
            "client_secret": SECRET,
            "scope": "all",
        },
    ).json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    for body in (
        [{"id": 42, "colour": "blue"}],
        [{"id": 42, "inactive": "no"}],
        {"id": 42},
        [{"id": "42"}],
    ):
        assert http.post("/api/Client", json=body, headers=auth).status_code == 400
    assert http.post("/api/Client", json=[{"id": 42}]).status_code == 401


def test_5xx_is_unavailable(halo, sandbox):
    halo.apply("update_client", 42, {"name": "warm the token"})
    sandbox.knobs("halopsa", fail_next=1, fail_status=502)
    with pytest.raises(errors.Unavailable):
        halo.apply("update_client", 42, {"name": "X"})


def test_5xx_from_the_token_endpoint_is_unavailable(halo, sandbox):
    sandbox.knobs("halopsa", fail_next=1, fail_status=503)
    with pytest.raises(errors.Unavailable):
        halo.apply("update_client", 42, {"name": "X"})
    assert calls(sandbox, "/api/Client") == []


def test_429_carries_retry_after(halo, sandbox):
    halo.apply("update_client", 42, {"name": "warm the token"})
    sandbox.knobs("halopsa", ratelimit_next=1, retry_after="9")
    with pytest.raises(errors.RateLimited) as caught:
        halo.apply("update_client", 42, {"name": "X"})
    assert caught.value.retry_after == 9


def test_hang_is_a_timeout(sandbox):
    halo = make(sandbox, timeout=0.3)
    halo.apply("update_client", 42, {"name": "warm the token"})  # so the API call hangs
    sandbox.knobs("halopsa", hang_next=1, hang_seconds=1)
    with pytest.raises(errors.Timeout):
        halo.apply("update_client", 42, {"name": "X"})


def test_redirect_is_rejected_naming_the_location(halo, sandbox):
    halo.apply("update_client", 42, {"name": "warm the token"})
    sandbox.knobs("halopsa", fail_next=1, fail_status=302)
    with pytest.raises(errors.Rejected) as caught:
        halo.apply("update_client", 42, {"name": "X"})
    assert "/auth/Account/Login" in str(caught.value)
    assert sandbox.record("halopsa", 42)["name"] == "warm the token"


CONFIG = """
sources:
  portal: {kind: hmac, secret: "portal-secret", header: X-Signature,
           id: "{{ payload.event_id }}", type: "{{ payload.event }}",
           occurred_at: "{{ payload.at }}"}
vendors:
  halo: {kind: halopsa, base_url: "http://127.0.0.1:8100/halopsa",
         auth: {client_id: halo-demo-client, client_secret: "${HALO_SECRET}", tenant: acme}}
rules:
  - name: close
    source: portal
    events: [closed]
    actions:
      - {vendor: halo, op: update_client, target: "{{ payload.client }}", fields: FIELDS}
"""


def load(tmp_path, fields: str):
    path = tmp_path / "switchboard.yaml"
    path.write_text(CONFIG.replace("FIELDS", fields))
    return load_config(path, env={"HALO_SECRET": SECRET})


def test_config_applies_auth_defaults_and_remembers_the_secret(tmp_path):
    config = load(tmp_path, '{inactive: true, colour: "#E83C4A"}')
    auth = config.vendors["halo"].auth
    assert (auth["tenant"], auth["scope"]) == ("acme", "all")
    assert SECRET in config.secrets


def test_config_check_rejects_a_bad_colour_and_unknown_field(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, "{colour: red, nickname: x}")
    text = str(caught.value)
    assert "fields.colour" in text and "fields.nickname" in text
