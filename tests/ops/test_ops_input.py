"""Ops input that is not what it looks like gets a precise 400, never a job or a 503: an
empty filter value (it must not widen a bulk replay to every entry), a time that is not a
finite number, a cursor no page gave."""

from __future__ import annotations

import json
import re

import pytest

from tests.helpers import hmac_headers
from tests.ops.support import OPS, synthetic_dead_letter

BAD_TIMES = ["nan", "inf", "-Infinity", "1e999"]


def _error(response) -> str:
    assert response.status_code == 400, response.data
    return response.get_json()["error"]["message"]


@pytest.mark.parametrize("body", [{"vendor": ""}, {"code": "", "all": False}, {"rule": ""}])
def test_an_empty_filter_value_does_not_replay_everything(client, redis, body):
    synthetic_dead_letter(redis, 1, 100.0)
    message = _error(client.post("/ops/dead-letters/replay", headers=OPS, json=body))
    assert "Shorter than minimum length" in message or "Must be one of" in message
    assert redis.keys("sb:job:*") == []


def test_a_code_no_dead_letter_can_carry_is_a_400_naming_the_codes(client, redis):
    # a typo must not read as "no such entries" (or a bulk replay of nothing)
    synthetic_dead_letter(redis, 1, 100.0)
    listed = _error(client.get("/ops/dead-letters?code=exausted", headers=OPS))
    assert "code" in listed and "exhausted" in listed
    replay = client.post("/ops/dead-letters/replay", headers=OPS, json={"code": "notfound"})
    assert "not_found" in _error(replay)
    assert redis.keys("sb:job:*") == []


def test_an_empty_query_parameter_is_left_out_as_forms_send_them(client, redis):
    # DESIGN lists GET /ops/dead-letters?vendor=&rule=&...: those empties were a 400
    entry = synthetic_dead_letter(redis, 1, 100.0)
    page = client.get("/ops/dead-letters?vendor=&rule=&code=&limit=&cursor=", headers=OPS)
    assert page.status_code == 200, page.data
    assert [i["id"] for i in page.get_json()["items"]] == [entry]
    assert client.get("/ops/audit?action=&id=&limit=", headers=OPS).status_code == 200


@pytest.mark.parametrize("value", [*BAD_TIMES, "true"])
def test_a_time_that_is_not_finite_is_a_400(client, value):
    message = _error(client.get(f"/ops/dead-letters?since={value}", headers=OPS))
    assert "since" in message


@pytest.mark.parametrize("value", [float("nan"), float("inf"), True])
def test_a_bulk_replay_time_that_is_not_finite_is_a_400(client, redis, value):
    body = json.dumps({"vendor": "perfex", "until": value})  # NaN/Infinity as Python writes
    response = client.post(
        "/ops/dead-letters/replay", headers={**OPS, "Content-Type": "application/json"}, data=body
    )
    assert "until" in _error(response)
    assert redis.keys("sb:job:*") == []


@pytest.mark.parametrize("cursor", ["garbage", "nan:x", "12.5", "12.5:", "inf:abc"])
def test_a_cursor_no_page_gave_is_a_400(client, cursor):
    assert "cursor" in _error(client.get(f"/ops/dead-letters?cursor={cursor}", headers=OPS))


def test_the_cursor_a_page_gave_still_works(client, redis):
    ids = [synthetic_dead_letter(redis, n, 100.0 + n) for n in range(3)]
    first = client.get("/ops/dead-letters?limit=2", headers=OPS).get_json()
    second = client.get(f"/ops/dead-letters?limit=2&cursor={first['next_cursor']}", headers=OPS)
    assert [i["id"] for i in second.get_json()["items"]] == [ids[0]]


def _sign_in(client, next_page: str | None = None):
    """Sign the test client in to the page; the redirect it answered."""
    login = client.get("/ops/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', login)
    assert csrf is not None
    signed_in = client.post(
        "/ops/login",
        query_string={"next": next_page} if next_page is not None else None,
        data={"token": "test-ops-token", "csrf_token": csrf[1]},
    )
    assert signed_in.status_code == 302
    return signed_in


@pytest.mark.parametrize(
    "next_page", ["/ops/\r\nSet-Cookie: x=1", "/ops/\n", "//evil.test/ops/", "/ops/ x"]
)
def test_a_next_page_that_is_no_plain_ops_path_goes_to_the_list(client, next_page):
    # a CR/LF in ?next= was a 500 after a good login (werkzeug refused the header)
    assert _sign_in(client, next_page).headers["Location"] == "/ops/"


def test_a_next_page_inside_ops_is_kept(client):
    target = "/ops/dead-letters/dl-1?vendor=perfex"
    assert _sign_in(client, target).headers["Location"] == target


def test_the_page_shows_the_first_page_for_a_cursor_it_did_not_give(client, redis):
    entry = synthetic_dead_letter(redis, 1, 100.0)
    _sign_in(client)
    page = client.get("/ops/?cursor=garbage")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "Page link ignored" in text and entry in text


def test_an_event_id_holding_a_slash_is_reachable(client, redis):
    body = json.dumps({"event_id": "acct/42/evt-1", "event": "nothing.matches", "at": 1.7e9})
    posted = client.post("/webhooks/portal", data=body, headers=hmac_headers(body.encode()))
    assert posted.status_code == 200  # stored, no rule matched
    shown = client.get("/ops/events/portal/acct%2F42%2Fevt-1", headers=OPS)
    assert shown.status_code == 200 and shown.get_json()["event"]["id"] == "acct/42/evt-1"
    replayed = client.post("/ops/events/portal/acct%2F42%2Fevt-1/replay", headers=OPS)
    assert replayed.status_code == 200 and replayed.get_json()["tasks"] == 0


def _pending_job(redis) -> dict:
    """A bulk replay job recorded and not run (nobody holds its runner lease)."""
    from config.loader import load_config
    from tests.helpers import TEST_CONFIG
    from webhooks.ops.service import Ops
    from webhooks.rules import RuleSet

    synthetic_dead_letter(redis, 1, 100.0)
    return Ops(redis, RuleSet(load_config(TEST_CONFIG))).start_bulk_replay({"all": True}, "t")


def test_a_job_is_cancelled_over_the_api_once(client, redis):
    job = _pending_job(redis)
    cancelled = client.delete(f"/ops/jobs/{job['id']}", headers=OPS)
    assert cancelled.status_code == 200 and cancelled.get_json()["state"] == "cancelled"
    again = client.delete(f"/ops/jobs/{job['id']}", headers=OPS)
    assert (again.status_code, again.get_json()["error"]["code"]) == (409, "conflict")
    assert client.delete("/ops/jobs/nope", headers=OPS).status_code == 404
    assert client.delete(f"/ops/jobs/{job['id']}").status_code == 401


def test_the_page_cancels_a_job(client, redis):
    job = _pending_job(redis)
    _sign_in(client)
    before = client.get(f"/ops/job/{job['id']}").get_data(as_text=True)
    assert "Cancel the rest" in before
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', before)
    assert csrf is not None
    done = client.post(f"/ops/job/{job['id']}/cancel", data={"csrf_token": csrf[1]})
    assert done.status_code == 302
    page = client.get(f"/ops/job/{job['id']}").get_data(as_text=True)
    assert "<strong>cancelled</strong>" in page and "Cancel the rest" not in page


def test_signing_out_revokes_the_cookie_and_every_copy_of_it(client, app):
    # a cookie copied before sign-out (a shared machine, a proxy log) kept working for the
    # rest of its 12 hours: the sign-in is now a record in Redis that sign-out deletes
    _sign_in(client)
    assert client.get("/ops/").status_code == 200
    copied = client.get_cookie("switchboard_ops", path="/ops").value
    page = client.get("/ops/").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert csrf is not None
    assert client.post("/ops/logout", data={"csrf_token": csrf[1]}).status_code == 302
    thief = app.test_client()
    thief.set_cookie("switchboard_ops", copied, path="/ops")
    answer = thief.get("/ops/")
    assert answer.status_code == 302 and "/ops/login" in answer.headers["Location"]


def test_each_page_view_renews_the_sign_in(client, redis):
    # the record's 12 h ran from sign-in while the cookie renewed on every answer: an
    # operator at work was signed out mid-session
    from worker import keys

    _sign_in(client)
    [key] = redis.keys(keys.ops_session("*"))
    redis.expire(key, 100)
    assert client.get("/ops/").status_code == 200
    assert redis.ttl(key) > 11 * 3600


def test_the_cookie_is_secure_when_the_page_is_reached_over_https(client):
    assert "Secure" not in _sign_in(client).headers["Set-Cookie"]  # the demo: plain http
    for secure in (
        {"base_url": "https://ops.example"},
        {"headers": {"X-Forwarded-Proto": "https"}},  # TLS ends at a proxy in front
    ):
        login = client.get("/ops/login", **secure).get_data(as_text=True)
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', login)
        assert csrf is not None
        signed_in = client.post(
            "/ops/login", data={"token": "test-ops-token", "csrf_token": csrf[1]}, **secure
        )
        assert signed_in.status_code == 302
        assert "; Secure" in signed_in.headers["Set-Cookie"], secure


def test_an_expired_form_gets_a_page_saying_so_not_raw_json(client):
    # after a restart every open tab's forms fail their check: that was a JSON error body
    _sign_in(client)
    answer = client.post(
        "/ops/logout", data={"csrf_token": "from-before-the-restart"},
        headers={"Referer": "http://localhost/ops/dead-letters/x?vendor=perfex"},
    )  # fmt: skip
    assert answer.status_code == 400 and answer.mimetype == "text/html"
    text = answer.get_data(as_text=True)
    assert "That form has expired" in text
    assert '<a href="/ops/dead-letters/x">Load the page again</a>' in text
    assert client.get("/ops/").status_code == 200  # nothing was done: still signed in


def test_the_event_page_says_why_a_task_waits_and_when_it_goes_next(private_client, private_db):
    from tests.helpers import store_perfex_task
    from worker import keys
    from worker.queue import Queue

    queue = Queue(private_db)
    task = store_perfex_task(queue, "evt-page-next", "paid 1")
    attempt = {"at": 1.0, "outcome": "unavailable", "status": 503, "retry_at": 4102444800.0}
    private_db.hset(
        keys.task(task.id), mapping={"state": "retrying", "attempts": json.dumps([attempt])}
    )
    _sign_in(private_client)
    page = private_client.get("/ops/event?source=stripe&id=evt-page-next")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "last: unavailable" in text and "next 2100-01-01 00:00:00 UTC" in text


def test_the_code_filter_offers_exactly_the_codes_design_names():
    # it also offered vendor_error, which no dead letter carries
    from tests.helpers import ROOT
    from worker.deadletter import CODES

    design = (ROOT.parent / "shared" / "DESIGN.md").read_text()
    listed = design.split("Dead-letter codes:", 1)[1].split("\n\n", 1)[0]
    assert set(CODES) == set(re.findall(r"`([a-z_]+)`", listed))


def test_a_bad_filter_value_lists_nothing_rather_than_every_vendors_entries(client, redis):
    # vendor=perfex&since=yesterday listed porta's entries too, the box still saying
    # "perfex": a replay from there would have been of the wrong entries
    perfex = synthetic_dead_letter(redis, 1, 100.0, vendor="perfex")
    porta = synthetic_dead_letter(redis, 2, 100.0, vendor="porta")
    _sign_in(client)
    page = client.get("/ops/?vendor=perfex&since=yesterday").get_data(as_text=True)
    assert "Filter not applied — since" in page and "Nothing listed until the filter" in page
    assert perfex not in page and porta not in page
    assert "Replay every entry matching" not in page
    listed = client.get("/ops/?vendor=perfex").get_data(as_text=True)
    assert perfex in listed and porta not in listed and "Customer not found" in listed


def test_the_audit_page_shows_operators_actions_and_finds_an_events_whole_trail(client, redis):
    # after one bulk replay of more than 200 entries the page showed only its per-entry
    # records: the discards and the job itself were out of sight
    from tests.helpers import wait_for

    bulk = [synthetic_dead_letter(redis, n, 100.0 + n, vendor="porta") for n in range(3)]
    mine = synthetic_dead_letter(redis, 99, 50.0)
    job = client.post("/ops/dead-letters/replay", headers=OPS, json={"vendor": "porta"})
    job_id = job.get_json()["id"]
    wait_for(lambda: client.get(f"/ops/jobs/{job_id}", headers=OPS).get_json()["state"] == "done")
    assert client.post(f"/ops/dead-letters/{mine}/replay", headers=OPS).status_code == 202
    _sign_in(client)
    page = client.get("/ops/audit-log").get_data(as_text=True)
    assert job_id in page and mine in page and not any(i in page for i in bulk)
    every = client.get("/ops/audit-log?each=1").get_data(as_text=True)
    assert all(i in every for i in bulk)
    # an event's trail: the replays of its dead letters too (it found only event replays)
    trail = client.get("/ops/audit?id=stripe/evt_many_99", headers=OPS).get_json()["items"]
    assert [(r["action"], r["id"]) for r in trail] == [("replay", mine)]
    found = client.get("/ops/audit-log?id=stripe/evt_many_1&each=1").get_data(as_text=True)
    assert bulk[1] in found and mine not in found


def test_a_bulk_replay_body_that_is_no_json_object_is_a_400_saying_why(client, redis):
    # 60k "[" was a 500; a JSON filter sent as a form was told it is "not a JSON object"
    deep = client.post("/ops/dead-letters/replay", headers={**OPS, "Content-Type":
                       "application/json"}, data="[" * 60_000)  # fmt: skip
    assert "JSON object" in _error(deep)
    form = client.post("/ops/dead-letters/replay", headers=OPS, data='{"vendor": "porta"}')
    assert "Content-Type: application/json" in _error(form)
    assert redis.keys("sb:job:*") == []
