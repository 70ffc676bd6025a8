"""What each worker holds, so the deliveries a dead worker had reserved are due again soon.

A worker takes messages from the Celery queue before it runs them (prefetch) and keeps
each one, unacknowledged, until it has run every delivery in it. If the worker is killed,
kombu hands those messages back only after its visibility timeout, and our own queue lease
(``SWITCHBOARD_QUEUE_LEASE``) is as long: both one hour, because a message may wait that
long in a deep queue. So each worker publishes what it holds:

- :class:`HoldingsWriter`, a thread in every worker, writes ``sb:held:<worker>`` (JSON
  ``[[task id, gen], ...]``, the deliveries of every message Celery has reserved and not
  finished) whenever that set changes: at once when a message is taken (Celery's
  ``task_received``), else within :data:`WRITE_EVERY` seconds, with the worker's heartbeat.
- :class:`Recoverer`, run by every relay for the workers silent for longer than
  ``SWITCHBOARD_WORKER_DEAD_AFTER`` (30 s), makes each such delivery due now if it is
  still leased by the claim that published it (the task record's ``leased_until`` equals
  its due score): not finished, not running (``begin`` moved its lease), not deferred or
  rescheduled. One script per call, so two relays cannot both recover the same worker.

A delivery recovered while its message still runs somewhere (a worker that only looked
dead) is harmless: the gen check and the per-target lock let one run call the vendor.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

import redis as redis_lib
from celery import signals
from celery.worker import state as celery_state

from worker import keys
from worker.queue import STILL_CLAIMED

log = logging.getLogger("switchboard.relay")

#: the holdings of a worker are written at most this often (and on every change)
WRITE_EVERY = 0.1
#: and written again this often while any are held, even if unchanged
REWRITE_EVERY = 5.0
#: a worker silent this long is dropped from the heartbeats (names come and go with hosts)
FORGET_AFTER = 86400.0

_RECOVER = (
    STILL_CLAIMED
    + """
-- KEYS[1] heartbeats, KEYS[2] due, KEYS[3] wake, KEYS[4] recovered counts,
-- KEYS[5..] the held keys of the workers to recover
-- ARGV[1] now, ARGV[2] beaten before this = dead (inf: recover whatever the beat),
-- ARGV[3] task key prefix, ARGV[4..] the workers' names (same order as KEYS[5..])
-- Returns {name1, count1, name2, count2, ...} for the workers recovered.
local out = {}
local now = tonumber(ARGV[1])
for i = 5, #KEYS do
  local name = ARGV[i - 1]
  local beat = tonumber(redis.call('HGET', KEYS[1], name) or '0')
  local raw = redis.call('GET', KEYS[i])
  if raw and (ARGV[2] == 'inf' or beat < tonumber(ARGV[2])) then
    redis.call('DEL', KEYS[i])
    local count = 0
    for _, d in ipairs(cjson.decode(raw)) do
      local id = d[1]
      if still_claimed(ARGV[3] .. id, KEYS[2], id, tostring(d[2]), now) then
        redis.call('ZADD', KEYS[2], now, id)
        count = count + 1
      end
    end
    if count > 0 then
      redis.call('HINCRBY', KEYS[4], name, count)
      redis.call('RPUSH', KEYS[3], '1')
    end
    out[#out + 1] = name
    out[#out + 1] = tostring(count)
  end
end
return out
"""
)


def held_deliveries() -> list[tuple[str, int]] | None:
    """The deliveries of every message this worker process has reserved and not finished
    (Celery's own bookkeeping, kept in the consumer process for every pool); None when
    the set kept changing under the copy (then the last snapshot written stands)."""
    requests = _requests()
    if requests is None:
        return None
    out: set[tuple[str, int]] = set()
    for request in requests:
        out.update(deliveries_of(request))
    return sorted(out | RECEIVED.recent())


@signals.worker_shutdown.connect
def _forget_if_idle(sender: Any = None, **_: Any) -> None:
    """A worker that stopped cleanly holding nothing leaves no heartbeat behind (its
    series stayed in /metrics for a day); one that still holds deliveries keeps both, so
    its peers recover them as from a dead worker."""
    name = getattr(sender, "hostname", None)
    requests = _requests()
    holds = requests is None or any(deliveries_of(r) for r in requests)
    if not name or holds:
        return
    try:
        from worker.runtime import get_runtime

        pipe = get_runtime().redis.pipeline(transaction=True)
        pipe.hdel(keys.HEARTBEATS, name)
        pipe.delete(keys.held(name))
        pipe.execute()
    except redis_lib.RedisError as exc:  # then it is forgotten a day after its last beat
        log.warning("holdings: heartbeat not removed on stop (%s)", type(exc).__name__)


def _requests() -> list[Any] | None:
    """Celery's reserved requests in this process, copied (None: it kept changing)."""
    for _ in range(10):
        try:
            return list(celery_state.reserved_requests)
        except RuntimeError:  # the set changed while we copied it (another thread)
            continue
    return None


def deliveries_of(request: Any) -> list[tuple[str, int]]:
    """The ``(task id, gen)`` deliveries a Celery request of ours carries."""
    if request.name == "switchboard.apply_updates":
        return [(str(task_id), int(gen)) for task_id, gen in request.args[0]]
    if request.name == "switchboard.apply_update":
        return [(str(request.args[0]), int(request.args[1]))]
    return []


class Received:
    """Deliveries of messages just taken from the broker, for ``RECENT`` seconds.

    Celery sends ``task_received`` a moment *before* it adds the request to its reserved
    set; keeping them here lets the writer, woken by that signal, write them at once, so
    a worker killed right after taking a message has (almost always) written it down.
    Once they are in the reserved set, this copy only repeats them until it lapses.
    """

    RECENT = 2.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[tuple[float, list[tuple[str, int]]]] = []
        self.wake = threading.Event()

    def add(self, deliveries: list[tuple[str, int]]) -> None:
        if deliveries:
            with self._lock:
                self._items.append((time.monotonic(), deliveries))
            self.wake.set()

    def recent(self) -> set[tuple[str, int]]:
        cutoff = time.monotonic() - self.RECENT
        with self._lock:
            self._items = [(at, d) for at, d in self._items if at >= cutoff]
            return {pair for _, deliveries in self._items for pair in deliveries}


RECEIVED = Received()


@signals.task_received.connect
def _on_received(request: Any = None, **_: Any) -> None:
    try:
        RECEIVED.add(deliveries_of(request))
    except Exception:  # never in the consumer's way: the 0.1 s poll still covers it
        log.exception("holdings: could not read a received message")


class Recoverer:
    """Runs the recovery script; one per process (the script is registered once)."""

    def __init__(self, client: redis_lib.Redis):
        self.client = client
        self._script = client.register_script(_RECOVER)

    def recover(self, names: Iterable[str], dead_before: float | None) -> dict[str, int]:
        """Make due now what the workers ``names`` held, if their heartbeat is older than
        ``dead_before`` (None: whatever their heartbeat says). Returns the number of
        deliveries made due, by worker, for the workers whose holdings were found."""
        names = list(names)
        if not names:
            return {}
        reply = self._script(
            keys=[keys.HEARTBEATS, keys.DUE, keys.WAKE, keys.RECOVERED]
            + [keys.held(n) for n in names],
            args=[time.time(), "inf" if dead_before is None else dead_before, keys.task("")]
            + names,
        )
        found = {reply[i].decode(): int(reply[i + 1]) for i in range(0, len(reply), 2)}
        for name, count in found.items():
            if count:
                log.warning("worker %s is gone: %d deliveries it held are due again", name, count)
        return found

    def recover_dead(
        self, beats: dict[str, float], now: float, dead_after: float
    ) -> dict[str, int]:
        """Recover every worker in ``beats`` (name -> last beat) silent for ``dead_after``;
        forget those silent for :data:`FORGET_AFTER` (their heartbeat gauge and recovered
        count go too)."""
        dead = [name for name, beat in beats.items() if now - beat > dead_after]
        found = self.recover(dead, now - dead_after)
        forgotten = [name for name in dead if now - beats[name] > FORGET_AFTER]
        if forgotten:  # names come and go with hosts: neither hash may pile them up
            pipe = self.client.pipeline(transaction=False)
            pipe.hdel(keys.HEARTBEATS, *forgotten)
            pipe.hdel(keys.RECOVERED, *forgotten)
            pipe.execute()
        return found


class HoldingsWriter(threading.Thread):
    """Writes this worker's holdings (and heartbeat) whenever they change."""

    def __init__(self, name: str, client: redis_lib.Redis | None = None):
        super().__init__(name=f"holdings-{name}", daemon=True)
        self.worker_name = name
        self._client = client
        self._stop_event = threading.Event()
        self._written: list[tuple[str, int]] | None = None
        self._written_at = 0.0

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)

    @property
    def client(self) -> redis_lib.Redis:
        if self._client is None:  # built in the worker, after Celery has started
            from worker.runtime import get_runtime

            self._client = get_runtime().redis
        return self._client

    def run(self) -> None:
        recovered = False
        while not self._stop_event.is_set():
            RECEIVED.wake.wait(WRITE_EVERY)  # a message just taken: write it down now
            RECEIVED.wake.clear()
            try:
                if not recovered:
                    # a worker of this name that ran before us is dead by definition
                    Recoverer(self.client).recover([self.worker_name], None)
                    recovered = True
                self.write_if_changed()
            except redis_lib.RedisError as exc:  # Redis restarting: next time
                log.warning("holdings: redis unavailable (%s); retrying", type(exc).__name__)
                self._stop_event.wait(1.0)
            except Exception:  # never let the thread die: a kill would then lose track
                log.exception("holdings: unexpected error; going on")
                self._stop_event.wait(1.0)

    def write_if_changed(self) -> None:
        """Write the holdings when they changed, and at least every ``REWRITE_EVERY``
        seconds while there are any: a worker that only looked dead (a long pause) has
        had its list taken by a recovery, and a kill right after would otherwise find
        nothing written, leaving its tasks to the hour-long claim lease."""
        held = held_deliveries()
        if held is None:
            return
        fresh = time.monotonic() - self._written_at < REWRITE_EVERY
        if held == self._written and (fresh or not held):
            return
        pipe = self.client.pipeline(transaction=True)
        pipe.set(keys.held(self.worker_name), json.dumps(held, separators=(",", ":")))
        pipe.hset(keys.HEARTBEATS, self.worker_name, time.time())
        pipe.execute()
        self._written, self._written_at = held, time.monotonic()
