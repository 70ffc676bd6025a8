"""The embedded Redis (REDIS_URL unset): processes started together find or start exactly
one; ops commands never start one of their own."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import redis as redis_lib

from tests.helpers import ROOT, TEST_CONFIG

RESOLVE = (
    "from config.embedded_redis import resolve_redis_url; from config.settings import Settings;"
    "print(resolve_redis_url(Settings.from_env()))"
)


def _env(var_dir: Path) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    environ.update(
        PYTHONPATH=str(ROOT),
        SWITCHBOARD_CONFIG=str(TEST_CONFIG),
        SANDBOX_URL="http://127.0.0.1:9",
        SWITCHBOARD_VAR_DIR=str(var_dir),
    )
    return environ


def test_processes_starting_together_share_one_embedded_redis(tmp_path):
    starters = [
        subprocess.Popen(
            [sys.executable, "-c", RESOLVE],
            cwd=ROOT,
            env=_env(tmp_path),
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    urls = {starter.communicate(timeout=60)[0].strip() for starter in starters}
    try:
        assert len(urls) == 1, urls  # without the lock: several servers, one AOF
        assert (tmp_path / "redis.url").read_text() == next(iter(urls))
    finally:
        for url in urls:
            with contextlib.suppress(redis_lib.ConnectionError):  # it closes as it stops
                redis_lib.Redis.from_url(url).shutdown(nosave=True)


def test_an_ops_command_never_starts_a_redis(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "webhooks.cli", "dlq", "list"],
        cwd=ROOT,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "no Redis: REDIS_URL is unset" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "redis.url").exists()


def test_start_uses_the_redis_already_running_in_the_var_dir(tmp_path):
    # `up` after a `web` run alone started a second server on the same AOF
    from config import embedded_redis

    started = []
    try:
        process, url = embedded_redis.start(tmp_path)
        started.append(process)
        again, same = embedded_redis.start(tmp_path)
        started.append(again)
        assert again is None and same == url  # nothing new to stop: whoever started it does
    finally:
        for server in filter(None, started):
            server.terminate()
            server.wait(timeout=10)


def test_the_embedded_redis_fsyncs_its_aof_before_answering_a_write(tmp_path):
    # appendfsync always: an acknowledged webhook survives a power cut, not only a crash
    from config import embedded_redis

    process, url = embedded_redis.start(tmp_path)
    assert process is not None
    try:
        client = redis_lib.Redis.from_url(url, decode_responses=True)
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
        assert client.config_get("dir") == {"dir": str(tmp_path.resolve())}
    finally:
        process.terminate()  # Redis may refuse it while it writes its first AOF
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
