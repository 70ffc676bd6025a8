"""``python -m worker.healthcheck NAME``: exit 0 when worker NAME on this host beat recently.

For container healthchecks (docker-compose.yml): the relay thread of every worker writes
``sb:heartbeats[<name>@<hostname>]`` each second, so a recent beat means the process is
up, reaches Redis and its relay is alive. Exit 1 otherwise, with the reason on stderr.
"""

from __future__ import annotations

import socket
import sys
import time

from worker import keys

LIMIT = 60.0


def check(name: str, limit: float = LIMIT) -> str | None:
    """None when healthy, else why not."""
    from config.embedded_redis import resolve_redis_url
    from config.settings import Settings
    from worker.runtime import connect

    try:
        beat = connect(resolve_redis_url(Settings.from_env())).hget(
            keys.HEARTBEATS, f"{name}@{socket.gethostname()}"
        )
    except Exception as exc:  # any failure to ask is unhealthy
        return f"redis: {type(exc).__name__}"
    if beat is None:
        return f"no heartbeat from {name}@{socket.gethostname()}"
    age = time.time() - float(beat)
    return None if age <= limit else f"last heartbeat {age:.0f} s ago"


def main(argv: list[str]) -> int:
    problem = check(argv[0] if argv else "worker")
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
