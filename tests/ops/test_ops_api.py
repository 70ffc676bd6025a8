"""The ops HTTP API against real Redis, a real Celery worker and the simulators."""

from __future__ import annotations

import threading
import time

from tests.helpers import make_settings, wait_for
from tests.ops.support import (
    OPS,
    dead_letter_via_pipeline,
    payment,
    post_stripe,
    state,
    synthetic_dead_letter,
    task_ids,
)


def puts(sandbox) -> int:
    return len([e for e in sandbox.log("perfexcrm") if e["method"] == "PUT"])


# -- auth --------------------------------------------------------------------------------
def test_wrong_or_missing_token_is_401(client):
    assert client.get("/ops/dead-letters").status_code == 401
    wrong = client.get("/ops/dead-letters", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert wrong.get_json()["error"]["code"] == "unauthorized"
    assert "nope" not in wrong.get_data(as_text=True)
    basic = client.get("/ops/dead-letters", headers={"Authorization": "Basic test-ops-token"})
    assert basic.status_code == 401
    assert client.get("/ops/dead-letters", headers=OPS).status_code == 200


def test_no_token_configured_means_ops_is_404(redis_server, sandbox, redis):
    from config.loader import load_config
    from tests.helpers import TEST_CONFIG
    from webhooks import create_app

    app = create_app(make_settings(redis_server.url, ops_token=None), load_config(TEST_CONFIG))
    client = app.test_client()
    for path in ("/ops/", "/ops/dead-letters", "/ops/login", "/ops/events/stripe/x"):
        assert client.get(path, headers=OPS).status_code == 404
    assert "/ops/dead-letters" not in client.get("/openapi.json").get_json()["paths"]


def test_named_tokens_name_the_operator_in_the_audit_log(redis_server, sandbox, redis):
    from config.loader import load_config
    from tests.helpers import TEST_CONFIG
    from webhooks import create_app

    settings = make_settings(redis_server.url, ops_token="alice:tok-a,bob:tok-b")
    client = create_app(settings, load_config(TEST_CONFIG)).test_client()
    entry_id = synthetic_dead_letter(redis, 1, time.time())
    bob = {"Authorization": "Bearer tok-b"}
    alice_name_only = {"Authorization": "Bearer alice"}
    assert client.get("/ops/dead-letters", headers=alice_name_only).status_code == 401
    assert client.delete(f"/ops/dead-letters/{entry_id}", headers=bob).status_code == 204
    [record] = client.get("/ops/audit", headers=bob).get_json()["items"]
    assert (record["action"], record["id"], record["who"]) == ("discard", entry_id, "bob")


# -- listing -----------------------------------------------------------------------------
def test_list_filters_newest_first(client, redis):
    base = time.time() - 1000
    ids = [synthetic_dead_letter(redis, i, base + i) for i in range(3)]
    other = synthetic_dead_letter(redis, 10, base + 10, vendor="porta", code="exhausted")
    body = client.get("/ops/dead-letters", headers=OPS).get_json()
    assert [i["id"] for i in body["items"]] == [other, *reversed(ids)]
    assert body["next_cursor"] is None
    only = client.get("/ops/dead-letters?vendor=porta", headers=OPS).get_json()["items"]
    assert [i["id"] for i in only] == [other]
    by_code = client.get("/ops/dead-letters?code=not_found&rule=payment-activates-crm", headers=OPS)
    assert [i["id"] for i in by_code.get_json()["items"]] == list(reversed(ids))
    assert client.get("/ops/dead-letters?source=portal", headers=OPS).get_json()["items"] == []
    ranged = client.get(
        f"/ops/dead-letters?since={base + 0.5}&until={base + 1.5}", headers=OPS
    ).get_json()["items"]
    assert [i["id"] for i in ranged] == [ids[1]]
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(base + 5))
    since_iso = client.get(f"/ops/dead-letters?since={iso}Z", headers=OPS).get_json()["items"]
    assert [i["id"] for i in since_iso] == [other]
    bad = client.get("/ops/dead-letters?since=yesterday&limit=0", headers=OPS)
    assert bad.status_code == 400
    assert bad.get_json()["error"]["code"] == "bad_request"


def test_pagination_over_1000_entries_returns_each_once_while_entries_are_added(client, redis):
    base = time.time() - 10_000
    original = {synthetic_dead_letter(redis, i, base + i) for i in range(1000)}
    removed = set()
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query = f"/ops/dead-letters?limit=70{f'&cursor={cursor}' if cursor else ''}"
        body = client.get(query, headers=OPS).get_json()
        seen += [i["id"] for i in body["items"]]
        pages += 1
        # while paging: new entries arrive (newer), and an older, not yet seen one goes away
        synthetic_dead_letter(redis, 5000 + pages, time.time())
        unseen = sorted(original - set(seen) - removed)
        if unseen:
            victim = unseen[len(unseen) // 2]
            assert client.delete(f"/ops/dead-letters/{victim}", headers=OPS).status_code == 204
            removed.add(victim)
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)), "an entry was returned twice"
    assert set(seen) == original - removed
    assert pages > 10


def test_entries_with_the_same_death_time_page_correctly(client, redis):
    at = time.time() - 50
    ids = {synthetic_dead_letter(redis, i, at) for i in range(25)}
    seen, cursor = [], None
    while True:
        body = client.get(
            f"/ops/dead-letters?limit=4{f'&cursor={cursor}' if cursor else ''}", headers=OPS
        ).get_json()
        seen += [i["id"] for i in body["items"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == sorted(ids)


# -- one entry, replay, discard -----------------------------------------------------------
def test_show_entry_in_full_with_every_attempt(client, worker, sandbox, redis):
    sandbox.knobs("perfexcrm", fail_next=10, fail_status=500)
    entry_id = dead_letter_via_pipeline(client, redis, "evt_ops_show")
    response = client.get(f"/ops/dead-letters/{entry_id}", headers=OPS)
    assert response.status_code == 200
    entry = response.get_json()
    assert (entry["code"], entry["vendor"], entry["rule"]) == (
        "exhausted",
        "perfex",
        "payment-activates-crm",
    )
    assert entry["task"]["target"] == "7"
    assert entry["event"]["id"] == "evt_ops_show"
    assert len(entry["attempts"]) == 3
    for attempt in entry["attempts"]:
        assert attempt["at"] > 0 and attempt["status"] == 500
        assert "Injected failure" in attempt["excerpt"]
        assert "perfex-demo-token" not in (attempt["excerpt"] or "")
    assert entry["attempts"][-1]["code"] == "exhausted"
    unknown = client.get("/ops/dead-letters/nope", headers=OPS)
    assert unknown.status_code == 404
    assert unknown.get_json()["error"]["code"] == "not_found"


def test_replay_after_the_simulator_is_fixed_updates_the_record_and_leaves_the_store(
    client, worker, sandbox, redis
):
    sandbox.knobs("perfexcrm", fail_next=10, fail_status=500)
    entry_id = dead_letter_via_pipeline(client, redis, "evt_ops_fixed")
    assert sandbox.record("perfexcrm", 7)["vat"] == ""
    sandbox.knobs("perfexcrm", fail_next=0)  # the vendor is back
    response = client.post(f"/ops/dead-letters/{entry_id}/replay", headers=OPS)
    assert response.status_code == 202
    assert response.get_json()["status"] == "queued"
    wait_for(lambda: sandbox.record("perfexcrm", 7)["vat"] == "paid 49.0")
    wait_for(lambda: client.get(f"/ops/dead-letters/{entry_id}", headers=OPS).status_code == 404)
    assert state(redis, entry_id) == "applied"
    assert client.get("/ops/dead-letters", headers=OPS).get_json()["items"] == []
    [record] = client.get("/ops/audit?action=replay", headers=OPS).get_json()["items"]
    assert (record["id"], record["who"], record["code"]) == (entry_id, "ops", "exhausted")


def test_double_replay_queues_once(client, worker, sandbox, redis):
    sandbox.knobs("perfexcrm", fail_next=10, fail_status=500)
    entry_id = dead_letter_via_pipeline(client, redis, "evt_ops_twice")
    before = puts(sandbox)
    sandbox.knobs("perfexcrm", fail_next=0, latency_ms=300)  # keep the replay in flight
    first = client.post(f"/ops/dead-letters/{entry_id}/replay", headers=OPS)
    second = client.post(f"/ops/dead-letters/{entry_id}/replay", headers=OPS)
    assert (first.status_code, first.get_json()["status"]) == (202, "queued")
    assert (second.status_code, second.get_json()["status"]) == (202, "already_replaying")
    wait_for(lambda: client.get(f"/ops/dead-letters/{entry_id}", headers=OPS).status_code == 404)
    time.sleep(0.5)
    assert puts(sandbox) - before == 1
    assert len(client.get("/ops/audit?action=replay", headers=OPS).get_json()["items"]) == 1


def test_concurrent_replays_of_one_entry_queue_it_once(private_client, private_db):
    # a database no worker reads: the replayed task must still be queued when we look
    client, redis = private_client, private_db
    entry_id = synthetic_dead_letter(redis, 1, time.time())
    results: list[str] = []

    def press() -> None:
        response = client.post(f"/ops/dead-letters/{entry_id}/replay", headers=OPS)
        results.append(response.get_json()["status"])

    threads = [threading.Thread(target=press) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["already_replaying"] * 11 + ["queued"]
    assert int(redis.hget(f"sb:task:{entry_id}", "gen")) == 1
    assert redis.zscore("sb:due", entry_id) is not None


def test_a_replay_that_fails_again_appends_the_new_attempts(client, worker, sandbox, redis):
    # a 400 dies at once (rejected) and, unlike 5xx, does not trip the circuit breaker
    sandbox.knobs("perfexcrm", fail_next=100, fail_status=400)
    entry_id = dead_letter_via_pipeline(client, redis, "evt_ops_again")
    first = client.get(f"/ops/dead-letters/{entry_id}", headers=OPS).get_json()
    assert first["code"] == "rejected" and len(first["attempts"]) == 1
    assert client.post(f"/ops/dead-letters/{entry_id}/replay", headers=OPS).status_code == 202

    def died_again():
        entry = client.get(f"/ops/dead-letters/{entry_id}", headers=OPS).get_json()
        return entry if len(entry.get("attempts", [])) == 2 and not entry["replaying"] else None

    entry = wait_for(died_again)
    assert entry["attempts"][:1] == first["attempts"]
    assert [(a["status"], a.get("final")) for a in entry["attempts"]] == [(400, True)] * 2
    assert entry["attempts"][1]["at"] > first["attempts"][0]["at"]
    assert entry["replays"] == 1
    assert entry["died_at"] > first["died_at"]
    assert entry["first_died_at"] == first["first_died_at"]
    # it can be replayed again now that the last replay has finished
    sandbox.knobs("perfexcrm", fail_next=0)
    assert client.post(f"/ops/dead-letters/{entry_id}/replay", headers=OPS).status_code == 202
    wait_for(lambda: client.get(f"/ops/dead-letters/{entry_id}", headers=OPS).status_code == 404)
    assert sandbox.record("perfexcrm", 7)["vat"] == "paid 49.0"


def test_discard_is_204_and_audited(client, worker, sandbox, redis):
    entry_id = dead_letter_via_pipeline(client, redis, "evt_ops_discard", customer="999")
    response = client.delete(f"/ops/dead-letters/{entry_id}", headers=OPS)
    assert response.status_code == 204
    assert response.get_data() == b""
    assert client.get(f"/ops/dead-letters/{entry_id}", headers=OPS).status_code == 404
    assert client.delete(f"/ops/dead-letters/{entry_id}", headers=OPS).status_code == 404
    [record] = client.get(f"/ops/audit?id={entry_id}", headers=OPS).get_json()["items"]
    assert record["action"] == "discard" and record["who"] == "ops" and record["at"] > 0
    assert record["code"] == "not_found" and record["vendor"] == "perfex"


def test_replay_of_unknown_entry_is_404(client):
    response = client.post("/ops/dead-letters/nope/replay", headers=OPS)
    assert response.status_code == 404


# -- bulk replay ---------------------------------------------------------------------------
def test_bulk_replay_by_filter_answers_at_once_with_a_job_and_progress(
    client, worker, sandbox, redis
):
    sandbox.knobs("perfexcrm", fail_next=100, fail_status=422)  # rejected at once
    ids = [dead_letter_via_pipeline(client, redis, f"evt_ops_bulk_{n}") for n in range(3)]
    other = synthetic_dead_letter(redis, 1, time.time(), vendor="porta", code="exhausted")
    sandbox.knobs("perfexcrm", fail_next=0)
    refused = client.post("/ops/dead-letters/replay", headers=OPS, json={})
    assert refused.status_code == 400
    response = client.post(
        "/ops/dead-letters/replay", headers=OPS, json={"vendor": "perfex", "code": "rejected"}
    )
    assert response.status_code == 202
    job = response.get_json()
    assert response.headers["Location"] == f"/ops/jobs/{job['id']}"

    def finished():
        current = client.get(f"/ops/jobs/{job['id']}", headers=OPS).get_json()
        return current if current["state"] == "done" else None

    done = wait_for(finished)
    assert (done["total"], done["done"], done["queued"], done["failed"]) == (3, 3, 3, 0)
    for entry_id in ids:
        wait_for(lambda e=entry_id: state(redis, e) == "applied")
    remaining = client.get("/ops/dead-letters", headers=OPS).get_json()["items"]
    assert [i["id"] for i in remaining] == [other]
    assert client.get("/ops/jobs/nope", headers=OPS).status_code == 404
    actions = [r["action"] for r in client.get("/ops/audit", headers=OPS).get_json()["items"]]
    assert actions.count("replay") == 3 and actions.count("bulk_replay") == 1


# -- mapping errors and events ------------------------------------------------------------
def test_mapping_error_replay_maps_the_action_again_with_the_current_rules(
    client, app, worker, sandbox, redis
):
    data, entry_id = _dead_for_a_missing_zip(client, redis, "evt_ops_mapping")
    shown = client.get(f"/ops/dead-letters/{entry_id}", headers=OPS).get_json()
    assert shown["code"] == "mapping_error"
    # the operator fixes the rule: zip now has a default
    fixed = _config_with_zip_default(app)
    _swap_rules(app, fixed)
    assert client.post(f"/ops/dead-letters/{entry_id}/replay", headers=OPS).status_code == 202
    wait_for(lambda: state(redis, entry_id) == "applied")
    record = sandbox.record("perfexcrm", data["data"]["object"]["metadata"]["perfex_customer"])
    assert record["zip"] == "none"
    assert client.get(f"/ops/dead-letters/{entry_id}", headers=OPS).status_code == 404


def test_a_mapping_error_keeps_its_event_for_replay_for_as_long_as_it_is_kept(
    client, app, worker, sandbox, redis
):
    # events expire SWITCHBOARD_EVENT_TTL_DAYS after they came; dead letters are kept
    # until handled: a week-old mapping_error could no longer be fixed and replayed (409)
    from worker import keys

    event_key = keys.event("stripe", "evt_ops_expired")
    data, entry_id = _dead_for_a_missing_zip(client, redis, "evt_ops_expired")
    assert redis.ttl(event_key) == -1  # kept while the dead letter needs it
    _swap_rules(app, _config_with_zip_default(app))
    assert client.post(f"/ops/dead-letters/{entry_id}/replay", headers=OPS).status_code == 202
    wait_for(lambda: state(redis, entry_id) == "applied")
    wait_for(lambda: redis.ttl(event_key) > 0)  # resolved: its time to live runs again
    record = sandbox.record("perfexcrm", data["data"]["object"]["metadata"]["perfex_customer"])
    assert record["zip"] == "none"
    assert "dl_refs" not in {k.decode() for k in redis.hkeys(event_key)}


def _dead_for_a_missing_zip(client, redis, event_id: str) -> tuple[dict, str]:
    """A customer.updated without a post code: its address rule's task dies as a
    mapping_error. (The event as sent, the dead task's id.)"""
    import json as jsonlib

    from tests.helpers import with_changes

    data = jsonlib.loads(with_changes("stripe/customer.updated.json", id=event_id))
    del data["data"]["object"]["address"]["postal_code"]
    assert post_stripe(client, jsonlib.dumps(data).encode()).status_code == 202
    [entry_id] = task_ids(redis, event_id)
    wait_for(lambda: state(redis, entry_id) == "dead")
    return data, entry_id


def _config_with_zip_default(app):
    import dataclasses

    config = app.extensions["switchboard"].config
    rules = []
    for rule in config.rules:
        if rule.name == "address-to-crm":
            action = rule.actions[0]
            fields = dict(action.fields)
            fields["zip"] = "{{ payload.data.object.address.postal_code | default('none') }}"
            action = dataclasses.replace(action, fields=fields)
            rule = dataclasses.replace(rule, actions=(action,))
        rules.append(rule)
    return dataclasses.replace(config, rules=type(config.rules)(rules))


def _swap_rules(app, config) -> None:
    app.extensions["switchboard"].use_config(config)  # as a reload of the file does


def test_events_show_lists_tasks_and_their_states(client, worker, sandbox, redis):
    assert post_stripe(client, payment("evt_ops_event")).status_code == 202
    [task_id] = task_ids(redis, "evt_ops_event")
    wait_for(lambda: state(redis, task_id) == "applied")
    response = client.get("/ops/events/stripe/evt_ops_event", headers=OPS)
    assert response.status_code == 200
    body = response.get_json()
    assert body["event"]["type"] == "payment_intent.succeeded"
    # stored lower-cased: the signature is dropped, what the test client sent is kept
    assert set(body["event"]["headers"]) == {"host", "user-agent", "content-type", "content-length"}
    [task] = body["tasks"]
    assert (task["id"], task["state"], task["vendor"], task["target"]) == (
        task_id,
        "applied",
        "perfex",
        "7",
    )
    assert task["dead_letter"] is None and task["attempts"][0]["outcome"] == "applied"
    assert client.get("/ops/events/stripe/nope", headers=OPS).status_code == 404


def test_event_replay_maps_again_and_bypasses_deduplication(client, worker, sandbox, redis):
    assert post_stripe(client, payment("evt_ops_replay_event", customer="999")).status_code == 202
    [first] = task_ids(redis, "evt_ops_replay_event")
    wait_for(lambda: state(redis, first) == "dead")
    # a duplicate delivery queues nothing; an event replay does
    assert post_stripe(client, payment("evt_ops_replay_event", customer="999")).status_code == 200
    response = client.post("/ops/events/stripe/evt_ops_replay_event/replay", headers=OPS)
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "queued" and body["tasks"] == 1
    [second] = body["task_ids"]
    assert second != first
    # the replay redoes the first task: its dead letter leaves (a replay of it would send
    # the old mapping again), audited as a discard naming the event replay
    assert client.get(f"/ops/dead-letters/{first}", headers=OPS).status_code == 404
    discards = client.get(f"/ops/audit?action=discard&id={first}", headers=OPS).get_json()
    assert discards["items"][0]["superseded_by"] == "event_replay stripe/evt_ops_replay_event"
    every = lambda: task_ids(redis, "evt_ops_replay_event")  # noqa: E731
    wait_for(lambda: {state(redis, t) for t in every()} == {"dead"})
    # a second press moments later, though the first's task has ended: it was queued again
    again = client.post("/ops/events/stripe/evt_ops_replay_event/replay", headers=OPS)
    assert again.status_code == 409, again.get_json()
    assert "was replayed" in again.get_json()["error"]["message"]
    assert every() == [first, second]
    shown = client.get("/ops/events/stripe/evt_ops_replay_event", headers=OPS).get_json()
    assert [t["id"] for t in shown["tasks"]][:2] == [first, second]
    assert {t["state"] for t in shown["tasks"]} == {"dead"}
    audit = client.get("/ops/audit?action=event_replay", headers=OPS).get_json()["items"]
    assert audit[-1]["id"] == "stripe/evt_ops_replay_event"
    assert client.post("/ops/events/stripe/nope/replay", headers=OPS).status_code == 404


def test_event_replay_is_refused_while_a_task_is_in_flight(private_client, private_db):
    # database 7: no worker reads it, so the task stays queued even if the session's runs
    client = private_client
    assert post_stripe(client, payment("evt_ops_inflight")).status_code == 202
    [task_id] = task_ids(private_db, "evt_ops_inflight")
    response = client.post("/ops/events/stripe/evt_ops_inflight/replay", headers=OPS)
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "conflict"
    assert task_id in response.get_json()["error"]["message"]
    assert task_ids(private_db, "evt_ops_inflight") == [task_id]  # nothing queued again
    assert state(private_db, task_id) == "queued"


def test_stats_counts_per_vendor_and_code(client, redis):
    synthetic_dead_letter(redis, 1, time.time())
    synthetic_dead_letter(redis, 2, time.time())
    synthetic_dead_letter(redis, 3, time.time(), vendor="porta", code="exhausted")
    body = client.get("/ops/stats", headers=OPS).get_json()
    assert body == {
        "total": 3,
        "vendor": {"perfex": 2, "porta": 1},
        "code": {"not_found": 2, "exhausted": 1},
    }


def test_page_and_api_routes_never_share_a_url(app):
    seen: dict[tuple[str, str], str] = {}
    for rule in app.url_map.iter_rules():
        for method in (rule.methods or set()) - {"OPTIONS", "HEAD"}:
            key = (rule.rule, method)
            assert key not in seen, f"{key} served by {seen[key]} and {rule.endpoint}"
            seen[key] = rule.endpoint
