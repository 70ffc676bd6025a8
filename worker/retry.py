"""Retry policy in one place: backoff and the retry-or-dead-letter decision, pure functions.

- ``compute_backoff(attempt, policy, rng)``: exponential with full jitter: a uniform
  draw in ``[0, min(max_delay, base_delay * 2 ** (attempt - 1))]``.
- ``decide(error, attempt, policy)``: a :class:`Retry` (with its delay; a vendor's
  ``Retry-After`` is honoured as the floor of the wait, up to :data:`MAX_RETRY_AFTER`)
  or a :class:`GiveUp` (the dead-letter code). Permanent errors give up at once;
  retryable ones after ``policy.max_attempts`` attempts with the error's code
  (``exhausted``; ``unknown_vendor`` for a vendor the worker's config lacks).
- ``decide_after(error, attempts, policy)``: the same, from a task's attempt records:
  a vendor's 429s spend no attempts and back off by how many came in a row, up to
  :data:`MAX_RATE_LIMITED` in a row.
Unit tests hit these without Celery or Redis; the worker only calls them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from worker.vendors.base import RetryPolicy
from worker.vendors.errors import RateLimited, RetryableError, VendorError

#: the longest a vendor's ``Retry-After`` can make a task wait (a day): one answer that
#: asks for years (or an HTTP date far ahead) must not park the task for good
MAX_RETRY_AFTER = 86400.0

#: a vendor's 429s do not spend attempts, but a vendor that answers nothing else for this
#: many calls in a row gets the task dead-lettered as ``exhausted`` all the same
MAX_RATE_LIMITED = 50


@dataclass(frozen=True)
class Retry:
    delay: float


@dataclass(frozen=True)
class GiveUp:
    code: str


def compute_backoff(attempt: int, policy: RetryPolicy, rng: random.Random | None = None) -> float:
    """Full-jitter exponential backoff for the ``attempt``-th failure (1-based)."""
    ceiling = min(policy.max_delay, policy.base_delay * 2 ** max(0, attempt - 1))
    return (rng or random).uniform(0, ceiling)


def decide(
    error: VendorError,
    attempt: int,
    policy: RetryPolicy,
    rng: random.Random | None = None,
    backoff_attempt: int | None = None,
) -> Retry | GiveUp:
    """What to do after ``attempt`` attempts, the last of which raised ``error``; the
    backoff grows with ``backoff_attempt`` instead when given (429s in a row, which do
    not count as attempts)."""
    if not isinstance(error, RetryableError):
        return GiveUp(error.code)
    if attempt >= policy.max_attempts:
        return GiveUp(error.code)  # "exhausted" (unknown_vendor for UnknownVendor)
    delay = compute_backoff(attempt if backoff_attempt is None else backoff_attempt, policy, rng)
    if error.retry_after is not None:  # a 429, or a 5xx that said when to come back
        delay = max(delay, min(error.retry_after, MAX_RETRY_AFTER))
    return Retry(delay)


def decide_after(
    error: VendorError, attempts: list[dict[str, Any]], policy: RetryPolicy
) -> Retry | GiveUp:
    """:func:`decide` after ``attempts`` (the task's records, the last one ``error``'s):
    a 429 with no ``Retry-After`` backs off by how many 429s came in a row, as any other
    failure does by its attempts, else a vendor's rate limit would be asked again every
    second; past :data:`MAX_RATE_LIMITED` in a row, whatever ``max_attempts`` says, it is
    ``exhausted``."""
    in_a_row = rate_limited_in_a_row(attempts) if isinstance(error, RateLimited) else 0
    if in_a_row > MAX_RATE_LIMITED:
        return GiveUp("exhausted")
    return decide(error, attempts_in_run(attempts), policy, backoff_attempt=in_a_row or None)


def attempts_in_run(attempts: list[dict[str, Any]]) -> int:
    """Attempts since the task last died (a replay starts a fresh run of retries), but
    for the vendor's 429s (outcome ``ratelimited``): the vendor asking us to wait is no
    failure of ours."""
    return sum(1 for a in _this_run(attempts) if a.get("outcome") != "ratelimited")


def rate_limited_in_a_row(attempts: list[dict[str, Any]]) -> int:
    """How many of the last attempts were 429s, back to the last other one."""
    count = 0
    for attempt in _this_run(attempts):
        if attempt.get("outcome") != "ratelimited":
            break
        count += 1
    return count


def _this_run(attempts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The attempts since the task last died, newest first."""
    run = []
    for attempt in reversed(attempts):
        if attempt.get("final"):
            break
        run.append(attempt)
    return run
