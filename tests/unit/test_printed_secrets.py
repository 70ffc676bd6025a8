"""What `switchboard up` prints holds no secret it was given: a Redis password is masked,
an ops token given in the environment is named, not shown."""

from __future__ import annotations

import pytest

from config.redis_url import redis_url_problem, shown_url
from webhooks.supervisor import token_note


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:S3cret@redis.internal:6379/0", "redis://:***@redis.internal:6379/0"),
        ("rediss://app:p%40ss@r:6380/1", "rediss://app:***@r:6380/1"),
        (
            "sentinel://:pw1@s1:26379/0;sentinel://:pw2@s2:26379/0",
            "sentinel://:***@s1:26379/0;sentinel://:***@s2:26379/0",
        ),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://user@h:6379/0", "redis://user@h:6379/0"),
        ("unix:///run/redis.sock?db=2", "unix:///run/redis.sock?db=2"),
        ("redis://h:6379/0?password=S3cret&db=1", "redis://h:6379/0?password=***&db=1"),
    ],
)
def test_a_redis_password_is_masked_and_nothing_else_changes(url, shown):
    assert shown_url(url) == shown


def test_a_token_given_is_named_not_printed_and_one_made_up_is_left_to_print():
    assert token_note(None) is None and token_note("  ") is None  # up makes one and shows it
    assert token_note("s3cr3t-token") == "token: $SWITCHBOARD_OPS_TOKEN"
    note = token_note("alice:tok-a,bob:tok-b") or ""
    assert "alice, bob" in note and "tok-a" not in note and "tok-b" not in note


def test_a_bad_redis_url_is_explained_once():
    problem = redis_url_problem("localhost:6379") or ""
    assert "scheme" in problem and "redis://, rediss://" not in problem
