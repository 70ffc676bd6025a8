"""The dead-letter store's by-value indexes and counts: exact through put, re-death and
resolve; a filtered page and the counts read only what they show; entries stored before
the indexes existed are indexed once, on first use."""

from __future__ import annotations

import json

from tests.ops.support import synthetic_dead_letter
from worker import keys
from worker.deadletter import DeadLetters
from worker.model import UpdateTask


def _hmget_calls(redis) -> int:
    return int(redis.info("commandstats").get("cmdstat_hmget", {}).get("calls", 0))


def _our_index_keys(redis) -> set[str]:
    return {k.decode() for k in redis.scan_iter(keys.DEAD_BY + "*")}


def test_counts_follow_put_a_second_death_and_resolve(private_db):
    store = DeadLetters(private_db)
    a = synthetic_dead_letter(private_db, 1, 100.0)
    b = synthetic_dead_letter(private_db, 2, 101.0, vendor="porta", code="exhausted")
    assert store.counts() == {
        "vendor": {"perfex": 1, "porta": 1},
        "code": {"not_found": 1, "exhausted": 1},
    }
    # A dies again after a replay, now as exhausted: it moves from not_found's count
    again = UpdateTask(**store.get(a)["task"])
    store.put(again, "exhausted", "gave up", [], now=102.0)
    assert store.counts()["code"] == {"exhausted": 2}
    assert [e["id"] for e in store.list(code="not_found").items] == []
    assert [e["id"] for e in store.list(code="exhausted").items] == [a, b]
    assert store.get(a)["first_died_at"] == 100.0

    store.resolve(b)
    assert store.counts() == {"vendor": {"perfex": 1}, "code": {"exhausted": 1}}
    store.resolve(a)
    store.resolve(a)  # a second resolve (a retried ack) changes nothing
    assert store.counts() == {"vendor": {}, "code": {}}
    assert store.count() == 0
    assert _our_index_keys(private_db) == set()  # no empty index is left behind


def test_a_filtered_page_reads_only_the_matching_entries(private_db):
    store = DeadLetters(private_db)
    for n in range(300):
        synthetic_dead_letter(private_db, n, 1000.0 + n)
    rare = [
        synthetic_dead_letter(private_db, 900 + n, 500.0 + n, vendor="porta", code="exhausted")
        for n in range(3)
    ]
    store.counts()  # the first use looks for entries stored before the indexes, once
    before = _hmget_calls(private_db)
    page = store.list(vendor="porta")
    assert [e["id"] for e in page.items] == rare[::-1]
    assert page.next_cursor is None
    # a scan of the whole store would read all 303 entries
    assert _hmget_calls(private_db) - before < 20

    before = _hmget_calls(private_db)
    assert store.counts() == {
        "vendor": {"perfex": 300, "porta": 3},
        "code": {"not_found": 300, "exhausted": 3},
    }
    # none of the 303 entries is read (the count is server-wide: a session worker's scripts
    # on another database may add a few)
    assert _hmget_calls(private_db) - before < 20

    # two filters: the smaller index is walked, its ids asked of the other; only entries
    # in both are read (300 perfex and 300 not_found, 0 in both, read 300 in full)
    for n in range(300):
        synthetic_dead_letter(private_db, 2000 + n, 3000.0 + n, vendor="halo", code="exhausted")
    before = _hmget_calls(private_db)
    assert store.list(vendor="perfex", code="exhausted").items == []
    assert store.list(vendor="halo", code="not_found").items == []
    assert _hmget_calls(private_db) - before < 20
    assert store.list(vendor="perfex", code="exhausted").items == []
    assert len(store.list(rule="payment-activates-crm", vendor="porta").items) == 3
    assert store.list(vendor="nobody").items == []


def _store_the_old_way(redis, entry_id: str, vendor: str, code: str, died_at: float) -> None:
    """An entry as stores before the by-value indexes wrote it: JSON and the index only."""
    entry = {
        "id": entry_id,
        "vendor": vendor,
        "code": code,
        "rule": "payment-activates-crm",
        "source": "stripe",
        "died_at": died_at,
        "attempts": [],
    }
    redis.hset(keys.dead(entry_id), mapping={"entry": json.dumps(entry), "replaying": "0"})
    redis.zadd(keys.DEAD_INDEX, {entry_id: died_at})


def test_entries_stored_before_the_indexes_are_indexed_once(private_db):
    for n in range(3):
        _store_the_old_way(private_db, f"old-{n}", "halo", "not_found", 10.0 + n)
    _store_the_old_way(private_db, "old-porta", "porta", "exhausted", 20.0)
    fresh = synthetic_dead_letter(private_db, 1, 30.0)

    store = DeadLetters(private_db)
    assert store.counts() == {
        "vendor": {"halo": 3, "porta": 1, "perfex": 1},
        "code": {"not_found": 4, "exhausted": 1},
    }
    assert [e["id"] for e in store.list(vendor="halo").items] == ["old-2", "old-1", "old-0"]
    assert DeadLetters(private_db).counts() == store.counts()  # a second pass adds nothing

    for entry_id in ("old-0", "old-1", "old-2", "old-porta", fresh):
        store.resolve(entry_id)
    assert store.counts() == {"vendor": {}, "code": {}}
    assert _our_index_keys(private_db) == set()
