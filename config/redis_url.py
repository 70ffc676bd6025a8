"""What a Redis URL may be (``REDIS_URL``): checked at start-up, so a typo is one line
naming the variable, not a traceback on the first request; and what the Redis behind it
must not do (evict keys)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

FORMS = "a redis://, rediss://, unix:// or sentinel:// URL"
SCHEMES = "scheme first: redis://host:6379/0"


_PASSWORD = re.compile(r"(//[^:@/;]*):[^@/;]*@")


_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&;]*")


def shown_url(url: str) -> str:
    """``url`` fit to print: every password in it (one per ``;``-joined sentinel, or a
    ``?password=`` as redis-py also reads it) masked."""
    return _QUERY_PASSWORD.sub(r"\1***", _PASSWORD.sub(r"\1:***@", url))


def parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], int, str | None]:
    """``(sentinel addresses, db, password)`` from one or more ``;``-joined sentinel URLs."""
    hosts: list[tuple[str, int]] = []
    db, password = 0, None
    for part in filter(None, (p.strip() for p in url.split(";"))):
        parsed = urlsplit(part)
        if parsed.scheme != "sentinel" or not parsed.hostname:
            raise ValueError(f"not a sentinel:// URL: {part!r}")
        hosts.append((parsed.hostname, parsed.port or 26379))
        if parsed.path.strip("/"):
            db = int(parsed.path.strip("/"))
        password = parsed.password or password
    return hosts, db, password


def redis_url_problem(url: str) -> str | None:
    """Why ``url`` is no Redis URL we can connect to, or None. The reason never repeats
    the URL: it may hold a password."""
    from redis.connection import parse_url

    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix", "sentinel"):
        return f"its scheme is not one of these ({SCHEMES})"
    try:
        if parts.scheme == "sentinel":
            parse_sentinel_url(url)
        else:
            parse_url(url)
    except ValueError:
        return "its host, port or database cannot be read"
    database = parts.path.strip("/")
    if parts.scheme in ("redis", "rediss") and database and not re.fullmatch("[0-9]+", database):
        return "its database is not a number"  # redis-py would quietly use database 0
    return None


def eviction_problem(memory: dict[str, Any]) -> str | None:
    """What is wrong with a Redis that may evict keys (``INFO memory`` as redis-py parses
    it), or None. With a ``maxmemory`` set, any policy but ``noeviction`` lets Redis drop
    keys Switchboard relies on (de-duplication, record locks, queued tasks, dead letters)
    when memory runs out; ``noeviction`` refuses the write instead, and a webhook gets a
    503 its sender retries."""
    policy = str(memory.get("maxmemory_policy", "noeviction"))
    if policy == "noeviction" or not int(memory.get("maxmemory") or 0):
        return None
    return (
        f"Redis maxmemory-policy is {policy}: when memory runs out it drops keys Switchboard "
        "needs (de-duplication, locks, queued tasks); set maxmemory-policy noeviction"
    )
