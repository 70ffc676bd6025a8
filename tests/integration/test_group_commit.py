"""Group commit (webhooks.commit): concurrent ingest writes share pipelines, each still
answered for itself, against the real Redis."""

from __future__ import annotations

import threading
import time

import pytest
import redis as redis_lib

from tests.helpers import RedisServer
from webhooks.commit import GroupCommit, NotReplicated
from worker.model import Event, UpdateTask
from worker.queue import Queue


def _event(i: int, run: str) -> tuple[Event, list[UpdateTask]]:
    now = time.time()
    event = Event("stripe", f"evt_gc_{run}_{i}", "x.y", now, now, {"i": i}, {})
    task = UpdateTask(
        "stripe", event.id, "x.y", "r", 0, "perfex", "update_customer", "7", {"vat": i}, now
    )
    return event, [task]


def _store_all(commit: GroupCommit, items, threads: int = 16) -> list[bool]:
    results: list[bool | None] = [None] * len(items)
    barrier = threading.Barrier(threads)

    def work(offset: int) -> None:
        barrier.wait()
        for i in range(offset, len(items), threads):
            results[i] = commit.store_event(*items[i])

    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=60)
    return results  # type: ignore[return-value]


def test_concurrent_writes_share_rounds_and_each_gets_its_own_answer(private_db):
    redis = private_db
    queue = Queue(redis)
    commit = GroupCommit(queue)
    items = [_event(i, "a") for i in range(400)]
    items += [items[i] for i in range(0, 400, 4)]  # 100 repeats of stored events
    results = _store_all(commit, items)
    assert results[:400] == [True] * 400
    assert results[400:] == [False] * 100  # duplicates, whichever round they were in
    assert commit.rounds < len(items)  # pipelines were shared
    for event, tasks in items[:400]:
        stored = queue.load_event("stripe", event.id)
        assert stored is not None and stored[1] == [tasks[0].id]
        assert redis.zscore("sb:due", tasks[0].id) is not None


def test_a_flushed_script_cache_is_reloaded(private_db):
    redis = private_db
    commit = GroupCommit(Queue(redis))
    redis.script_flush()
    assert commit.store_event(*_event(1, "b")) is True
    assert commit.store_event(*_event(1, "b")) is False


def test_redis_down_fails_every_waiting_write_and_the_next_ones_recover(tmp_path):
    # a server of its own: killing the session's would pull it from under its worker
    server = RedisServer(tmp_path)
    server.start()
    commit = GroupCommit(Queue(redis_lib.Redis.from_url(server.url)))
    try:
        server.stop(sig="kill")
        errors = _store_each_in_a_thread(commit, [_event(i, "c") for i in range(32)])
        assert len(errors) == 32  # every caller got an error (-> 503), none hung
        server.start()  # same port
        assert commit.store_event(*_event(99, "c")) is True
    finally:
        server.stop()


def _store_each_in_a_thread(commit: GroupCommit, items) -> list[redis_lib.RedisError]:
    """Store each item from a thread of its own, at once; the errors they raised."""
    errors: list[redis_lib.RedisError] = []

    def work(item) -> None:
        try:
            commit.store_event(*item)
        except redis_lib.RedisError as exc:
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(item,)) for item in items]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=60)
    return errors


def test_a_lone_writer_sends_at_once(private_db):
    commit = GroupCommit(Queue(private_db))
    for i in range(5):
        assert commit.store_event(*_event(i, "d")) is True
    assert commit.rounds == 5


def test_with_min_replicas_an_event_is_acknowledged_only_once_a_replica_has_it(tmp_path):
    """SWITCHBOARD_MIN_REPLICAS: WAIT in the round. A stopped replica makes the write fail
    (503 at the edge) although the master stored it; once the replica is back, the retry
    is answered as a duplicate and the replica holds the event."""
    import os
    import signal

    from tests.helpers import wait_for

    master, replica = RedisServer(tmp_path / "m"), RedisServer(tmp_path / "r")
    master.start()
    replica.start(replica_of=master)
    try:
        wait_for(master.replica_synced)
        client = redis_lib.Redis.from_url(master.url)
        commit = GroupCommit(Queue(client), min_replicas=1, replica_timeout=0.3)
        first, second = _event(1, "wait"), _event(2, "wait")
        assert commit.store_event(*first) is True
        assert redis_lib.Redis.from_url(replica.url).exists("sb:event:stripe:evt_gc_wait_1")
        assert replica.process is not None
        os.kill(replica.process.pid, signal.SIGSTOP)
        try:
            try:
                commit.store_event(*second)
                raise AssertionError("acknowledged without a replica")
            except NotReplicated as exc:
                assert "0 of 1 replica(s)" in str(exc)
            assert client.exists("sb:event:stripe:evt_gc_wait_2")  # stored on the master
            # the sender's retry reaches another web process (another connection), where
            # the event is a duplicate and nothing is written: still not confirmed
            other = redis_lib.Redis.from_url(master.url)
            with pytest.raises(NotReplicated):
                GroupCommit(Queue(other), min_replicas=1, replica_timeout=0.3).store_event(*second)
        finally:
            os.kill(replica.process.pid, signal.SIGCONT)
        assert commit.store_event(*second) is False  # the sender's retry: a duplicate
        replica_client = redis_lib.Redis.from_url(replica.url)
        assert replica_client.exists("sb:event:stripe:evt_gc_wait_2")
        assert GroupCommit(Queue(client)).store_event(*_event(3, "wait")) is True  # no WAIT
    finally:
        replica.stop()
        master.stop()
