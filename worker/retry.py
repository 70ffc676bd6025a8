"""Retry policy in one place: backoff and the retry-or-dead-letter decision, pure functions.

- ``compute_backoff(attempt, policy, rng)``: exponential with full jitter: a uniform
  draw in ``[0, min(max_delay, base_delay * 2 ** (attempt - 1))]``.
- ``decide(error, attempt, policy)``: a :class:`Retry` (with its delay; a vendor's
  ``Retry-After`` is honoured as the floor of the wait, up to :data:`MAX_RETRY_AFTER`)
  or a :class:`GiveUp` (the dead-letter code). Permanent errors give up at once;
  retryable ones after ``policy.max_attempts`` attempts with the error's code
  (``exhausted``; ``unknown_vendor`` for a vendor the worker's config lacks).
Unit tests hit these without Celery or Redis; the worker only calls them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from worker.vendors.base import RetryPolicy
from worker.vendors.errors import RetryableError, VendorError

#: the longest a vendor's ``Retry-After`` can make a task wait (a day): one answer that
#: asks for years (or an HTTP date far ahead) must not park the task for good
MAX_RETRY_AFTER = 86400.0


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
