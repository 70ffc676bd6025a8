"""A vendor's 429s spend no attempts and back off by how many came in a row; past
MAX_RATE_LIMITED in a row the task is ``exhausted``, whatever ``max_attempts`` says."""

from __future__ import annotations

import pytest

from worker.retry import MAX_RATE_LIMITED, GiveUp, Retry, decide_after
from worker.vendors.base import RetryPolicy
from worker.vendors.errors import RateLimited, Unavailable

LIMITED = {"outcome": "ratelimited"}
FAILED = {"outcome": "unavailable"}


@pytest.mark.parametrize("max_attempts", [8, 60, 100])
def test_the_cap_on_429s_in_a_row_holds_whatever_max_attempts_says(max_attempts):
    # with max_attempts 100 it took 100 429s; with 8, 51
    policy = RetryPolicy(max_attempts=max_attempts, base_delay=1, max_delay=10)
    at_cap = [LIMITED] * MAX_RATE_LIMITED
    assert isinstance(decide_after(RateLimited("429"), at_cap, policy), Retry)
    past = decide_after(RateLimited("429"), [*at_cap, LIMITED], policy)
    assert past == GiveUp("exhausted")


def test_only_429s_in_a_row_count_and_they_spend_no_attempts():
    policy = RetryPolicy(max_attempts=3, base_delay=1, max_delay=10_000)
    broken_up = [LIMITED] * 40 + [FAILED] + [LIMITED] * 40  # 80 in all, 40 in a row
    assert isinstance(decide_after(RateLimited("429"), broken_up, policy), Retry)
    assert isinstance(decide_after(Unavailable("503"), [*broken_up, FAILED], policy), Retry)
    spent = [*broken_up, FAILED, FAILED]  # the third attempt of our own
    assert decide_after(Unavailable("503"), spent, policy) == GiveUp("exhausted")


def test_a_replay_starts_a_fresh_run():
    policy = RetryPolicy(max_attempts=100, base_delay=1, max_delay=10)
    died = [*([LIMITED] * MAX_RATE_LIMITED), {**LIMITED, "final": True}]
    assert isinstance(decide_after(RateLimited("429"), [*died, LIMITED], policy), Retry)


def test_the_backoff_grows_with_the_429s_in_a_row():
    policy = RetryPolicy(max_attempts=8, base_delay=1, max_delay=10_000)
    first = [decide_after(RateLimited("429"), [LIMITED], policy) for _ in range(200)]
    tenth = [decide_after(RateLimited("429"), [LIMITED] * 10, policy) for _ in range(200)]
    assert max(r.delay for r in first if isinstance(r, Retry)) <= 1
    assert max(r.delay for r in tenth if isinstance(r, Retry)) > 100  # up to 512 s
