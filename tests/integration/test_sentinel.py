"""``REDIS_URL=sentinel://...``: our client and Celery's find the master through Sentinel."""

from __future__ import annotations

import subprocess
import sys

import pytest

from config import embedded_redis
from tests.helpers import ROOT, RedisServer
from worker.runtime import connect, parse_sentinel_url


def test_sentinel_urls_parse_like_celerys():
    hosts, db, password = parse_sentinel_url(
        "sentinel://:pw@10.0.0.1:26379/2;sentinel://10.0.0.2:26380/2;sentinel://s3"
    )
    assert hosts == [("10.0.0.1", 26379), ("10.0.0.2", 26380), ("s3", 26379)]
    assert (db, password) == (2, "pw")
    with pytest.raises(ValueError):
        parse_sentinel_url("redis://x:6379")


@pytest.fixture
def sentinel(tmp_path):
    master = RedisServer(tmp_path / "master")
    (tmp_path / "master").mkdir()
    master.start()
    port = embedded_redis.free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor sbtest 127.0.0.1 {master.port} 1\n"
    )
    binary = embedded_redis.server_args(tmp_path, port)[0]
    process = subprocess.Popen([binary, str(conf), "--sentinel"], stdout=subprocess.DEVNULL)
    try:
        embedded_redis.wait_ready(f"redis://127.0.0.1:{port}/0")
        yield f"sentinel://127.0.0.1:{port}/0", master
    finally:
        process.terminate()
        process.wait(timeout=10)
        master.stop()


def test_connect_reaches_the_master_named_by_the_sentinels(sentinel, monkeypatch):
    url, master = sentinel
    monkeypatch.setenv("SWITCHBOARD_SENTINEL_MASTER", "sbtest")
    client = connect(url)
    client.set("sb:probe", "via-sentinel")
    import redis as redis_lib

    assert redis_lib.Redis.from_url(master.url).get("sb:probe") == b"via-sentinel"


def test_celery_uses_the_sentinel_master_name(sentinel):
    url, _ = sentinel
    code = (
        "from worker.celery_app import app;"
        "print(app.conf.broker_url, app.conf.broker_transport_options['master_name'])"
    )
    env = {"REDIS_URL": url, "SWITCHBOARD_SENTINEL_MASTER": "sbtest", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert out.stdout.split() == [url, "sbtest"], out.stderr
