"""Failed ops logins, counted per client address in Redis (shared by every web process).

After :data:`LIMIT` failures (a wrong or missing API token, a wrong token on the login
page) within :data:`WINDOW` seconds of the first one, that address is refused with 429
and ``Retry-After`` until the window runs out, even with a good token: a token cannot be
found by trying. A successful login clears the count. The address is the connection's
(``REMOTE_ADDR``): behind a reverse proxy every client shares the proxy's; forwarded
headers are not trusted (see docs/ops.md).
"""

from __future__ import annotations

import redis as redis_lib

from webhooks.errors import ApiError
from worker import keys

LIMIT = 10
WINDOW = 300  # seconds


class TooManyFailures(ApiError):
    status = 429
    code = "too_many_failures"

    def __init__(self, retry_after: int):
        super().__init__(f"too many failed attempts from this address; retry in {retry_after} s")
        self.retry_after = retry_after


_key = keys.ops_fails


def refused_for(client: redis_lib.Redis, address: str) -> int:
    """Seconds this address must still wait (0: it may try)."""
    pipe = client.pipeline(transaction=False)
    pipe.get(_key(address))
    pipe.ttl(_key(address))
    count, ttl = pipe.execute()
    if count is None or int(count) < LIMIT:
        return 0
    return max(1, int(ttl))


def check(client: redis_lib.Redis, address: str) -> None:
    """Raise :class:`TooManyFailures` while ``address`` is refused."""
    wait = refused_for(client, address)
    if wait:
        raise TooManyFailures(wait)


def failed(client: redis_lib.Redis, address: str) -> None:
    pipe = client.pipeline()  # MULTI: both or neither
    pipe.set(_key(address), 0, nx=True, ex=WINDOW)  # the window runs from the first failure
    pipe.incr(_key(address))  # keeps the key's time to live
    pipe.execute()


def succeeded(client: redis_lib.Redis, address: str) -> None:
    client.delete(_key(address))
