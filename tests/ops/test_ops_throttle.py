"""Failed ops logins are throttled per client address (webhooks.ops.throttle)."""

from __future__ import annotations

import re

from tests.ops.support import OPS
from webhooks.ops import throttle

WRONG = {"Authorization": "Bearer wrong-token"}


def _from(address: str) -> dict:
    return {"environ_base": {"REMOTE_ADDR": address}}


def test_an_address_that_fails_too_often_is_refused_even_with_the_right_token(client, redis):
    for _ in range(throttle.LIMIT):
        assert (
            client.get("/ops/dead-letters", headers=WRONG, **_from("10.0.0.1")).status_code == 401
        )
    refused = client.get("/ops/dead-letters", headers=OPS, **_from("10.0.0.1"))
    assert refused.status_code == 429
    assert refused.get_json()["error"]["code"] == "too_many_failures"
    assert 0 < int(refused.headers["Retry-After"]) <= throttle.WINDOW
    # another address is not affected, and the count lives in Redis (every web shares it)
    assert client.get("/ops/dead-letters", headers=OPS, **_from("10.0.0.2")).status_code == 200
    assert int(redis.get("sb:ops:fails:10.0.0.1")) == throttle.LIMIT
    assert 0 < redis.ttl("sb:ops:fails:10.0.0.1") <= throttle.WINDOW
    redis.delete("sb:ops:fails:10.0.0.1")  # the window ran out
    assert client.get("/ops/dead-letters", headers=OPS, **_from("10.0.0.1")).status_code == 200


def test_fewer_failures_than_the_limit_do_not_lock_anyone_out(client, redis):
    for _ in range(throttle.LIMIT - 1):
        client.get("/ops/dead-letters", **_from("10.0.0.3"))  # no token at all counts too
    assert client.get("/ops/dead-letters", headers=OPS, **_from("10.0.0.3")).status_code == 200


def _login_form(client, token: str, address: str):
    page = client.get("/ops/login", **_from(address)).get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
    data = {"token": token, **({"csrf_token": csrf.group(1)} if csrf else {})}
    return client.post("/ops/login", data=data, **_from(address))


def test_the_login_page_is_throttled_and_a_success_clears_the_count(client, redis):
    for _ in range(3):
        assert _login_form(client, "wrong", "10.0.0.4").status_code == 401
    assert _login_form(client, "test-ops-token", "10.0.0.4").status_code == 302
    assert redis.get("sb:ops:fails:10.0.0.4") is None  # cleared by the success
    for _ in range(throttle.LIMIT):
        assert _login_form(client, "wrong", "10.0.0.5").status_code == 401
    refused = _login_form(client, "test-ops-token", "10.0.0.5")
    assert refused.status_code == 429
    assert "Too many failed attempts" in refused.get_data(as_text=True)
