"""Circuit breaker per vendor instance, its state in Redis so every worker process shares it.

States (``sb:circuit:<vendor>``, a hash):

- ``closed``: calls go. Each transient failure (timeout, network error, 5xx) adds one to
  ``failures``; any answer from the vendor that is not such a failure (success, 404, 4xx)
  resets it, and so does a failure more than :data:`FAILURE_WINDOW` after the last one
  (the count of a vendor gone quiet expires with it). ``failures`` reaching the vendor's
  ``circuit.failures`` opens the circuit.
  A 429 neither counts nor resets: the vendor is up, it asks us to slow down, and its
  Retry-After already schedules the wait.
- ``open`` until ``until`` (= opened + ``circuit.cooldown``): no calls. Tasks are deferred
  to ``until`` without spending an attempt (:func:`worker.runner.process`).
- ``half_open``: after the cooldown exactly one caller gets the probe (``probe_until``
  bounds it, so a probe whose worker died is taken over). Its success closes the circuit,
  a transient failure opens it for another cooldown; everyone else waits meanwhile.

Every transition is one Lua script, so concurrent workers cannot both take the probe or
lose a failure count. :func:`circuit_states` is the read side for ``/readyz`` and metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis as redis_lib

from config.logs import event as log_event
from worker import keys

log = logging.getLogger("switchboard.worker")

#: failures this far apart (seconds) do not add up to open the circuit: 4 timeouts one
#: day and 1 the next month are no outage
FAILURE_WINDOW = 600.0

#: ``now`` in the scripts: the time given (tests), else Redis's own clock, so hosts whose
#: clocks differ still agree on when a cooldown ends
_NOW = """
local function clock(given)
  if given ~= '' then return tonumber(given) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1e6
end
"""

_ALLOW = (
    _NOW
    + """
-- KEYS[1] circuit; ARGV[1] now ('' for Redis's clock), ARGV[2] probe ttl
-- returns {'go'|'probe'|'wait', seconds to wait}
local state = redis.call('HGET', KEYS[1], 'state')
if (not state) or state == 'closed' then return {'go', '0'} end
local now = clock(ARGV[1])
if state == 'open' then
  local untl = tonumber(redis.call('HGET', KEYS[1], 'until') or '0')
  if now < untl then return {'wait', tostring(untl - now)} end
  redis.call('HSET', KEYS[1], 'state', 'half_open', 'probe_until', now + tonumber(ARGV[2]))
  return {'probe', '0'}
end
-- half_open: one probe at a time; a probe that outlived its ttl (worker died) is retaken
local probe_until = tonumber(redis.call('HGET', KEYS[1], 'probe_until') or '0')
if now < probe_until then return {'wait', tostring(math.min(1.0, probe_until - now))} end
redis.call('HSET', KEYS[1], 'probe_until', now + tonumber(ARGV[2]))
return {'probe', '0'}
"""
)

_RESULT = (
    _NOW
    + """
-- KEYS[1] circuit; ARGV[1] 'ok'|'fail'|'release', ARGV[2] now ('' for Redis's clock),
-- ARGV[3] failures to open, ARGV[4] cooldown, ARGV[5] failure window.
-- Returns {state before, state after, failures}.
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
local now = clock(ARGV[2])
if ARGV[1] == 'release' then
  if state == 'half_open' then redis.call('HSET', KEYS[1], 'probe_until', 0) end
  return {state, state, 0}
end
if ARGV[1] == 'ok' then
  if state ~= 'closed' or redis.call('HEXISTS', KEYS[1], 'failures') == 1 then
    redis.call('DEL', KEYS[1])
  end
  return {state, 'closed', 0}
end
if state == 'open' then return {state, 'open', 0} end  -- late failures of calls sent before
local window = tonumber(ARGV[5])
local last = tonumber(redis.call('HGET', KEYS[1], 'failed_at') or now)
if state == 'closed' and now - last > window then
  redis.call('HDEL', KEYS[1], 'failures')  -- the last failure is too long ago to add up
end
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
redis.call('HSET', KEYS[1], 'failed_at', now)
if state == 'closed' and failures < tonumber(ARGV[3]) then
  redis.call('EXPIRE', KEYS[1], math.ceil(window))  -- a vendor gone quiet leaves nothing
  return {state, 'closed', failures}
end
if state == 'half_open' or failures >= tonumber(ARGV[3]) then
  redis.call('PERSIST', KEYS[1])  -- open (and half open after it) lasts its cooldown
  redis.call('HSET', KEYS[1], 'state', 'open', 'until', now + tonumber(ARGV[4]),
             'opened_at', now, 'probe_until', 0)
  redis.call('HINCRBY', KEYS[1], 'opened', 1)
  return {state, 'open', failures}
end
return {state, state, failures}
"""
)


@dataclass(frozen=True)
class Decision:
    """``go`` (closed), ``probe`` (this caller is the half-open probe) or ``wait`` seconds."""

    verdict: str
    wait: float = 0.0

    @property
    def allowed(self) -> bool:
        return self.verdict != "wait"


class Circuit:
    """The breaker of one vendor instance (cheap to build; state lives in Redis)."""

    def __init__(
        self,
        client: redis_lib.Redis,
        vendor: str,
        failures: int = 5,
        cooldown: float = 30.0,
        probe_ttl: float = 30.0,
    ):
        self.redis = client
        self.vendor = vendor
        self.key = keys.circuit(vendor)
        self.failures = failures
        self.cooldown = cooldown
        self.probe_ttl = probe_ttl

    def allow(self, now: float | None = None) -> Decision:
        """``now``: a time to use instead of Redis's clock (tests)."""
        verdict, wait = self.redis.eval(_ALLOW, 1, self.key, _given(now), self.probe_ttl)  # type: ignore[misc]
        return Decision(_text(verdict), float(wait))

    def success(self, now: float | None = None) -> str:
        return self._result("ok", now)

    def failure(self, now: float | None = None) -> str:
        return self._result("fail", now)

    def release(self, now: float | None = None) -> str:
        """Give the probe back unused (the call did not happen, e.g. rate limited)."""
        return self._result("release", now)

    def _result(self, what: str, now: float | None) -> str:
        before, after, failures = self.redis.eval(  # type: ignore[misc]
            _RESULT, 1, self.key, what, _given(now), self.failures, self.cooldown, FAILURE_WINDOW
        )
        before, after = _text(before), _text(after)
        if after != before and after in ("open", "closed"):  # not the probe's half_open
            self._log_change(before, after, int(failures))
        return after

    def _log_change(self, before: str, after: str, failures: int) -> None:
        """One line per change an operator must see: a vendor cut off, and back."""
        if after == "open":
            log_event(
                log, "circuit opened", at=logging.WARNING, vendor=self.vendor,
                was=before, failures=failures, cooldown_s=self.cooldown,
            )  # fmt: skip
        elif after == "closed":
            log_event(log, "circuit closed", vendor=self.vendor, was=before)


def _given(now: float | None) -> str:
    return "" if now is None else repr(now)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def circuit_states(
    client: redis_lib.Redis, vendors: Iterable[str], now: float | None = None
) -> dict[str, dict[str, Any]]:
    """``{vendor: {"state", "failures", "open_for", "opened"}}`` for /readyz and /metrics.

    ``vendors`` lists the configured names (each reported, ``closed`` when it has no
    state yet; the keyspace is never scanned: that grows with it). ``open_for`` is
    the seconds left of the cooldown (0 unless open); ``opened`` counts openings since
    the circuit last closed. ``now``: Redis's clock
    unless given (``until`` is written in it).
    """
    names = list(vendors)
    if not names:  # nothing to read, and no clock needed (a scrape asks with none)
        return {}
    pipe = client.pipeline()
    pipe.time()
    for name in names:
        pipe.hgetall(keys.circuit(name))
    clock, *replies = pipe.execute()
    now = clock[0] + clock[1] / 1e6 if now is None else now
    out: dict[str, dict[str, Any]] = {}
    for name, raw in zip(names, replies, strict=True):
        data = {_text(k): _text(v) for k, v in raw.items()}
        state = data.get("state", "closed")
        until = float(data.get("until", 0) or 0)
        out[name] = {
            "state": state,
            "failures": int(data.get("failures", 0) or 0),
            "open_for": round(max(0.0, until - now), 3) if state == "open" else 0.0,
            "opened": int(data.get("opened", 0) or 0),
        }
    return out
