"""Benchmark 1, ingest: signed webhooks through gunicorn vs a bare Flask "return 202".

``python -m bench.ingest [--seconds 10] [--rate 1000]`` starts a private Redis (AOF,
fsync everysec), serves each app exactly as ``switchboard web`` does (gunicorn, 2 gthread
workers x 8 threads), and drives it from a separate load-generator process
(:mod:`bench.loadgen`): first closed-loop (as fast as it answers: the rate), then
open-loop at ``--rate`` req/s (latency from the scheduled start). Prints a table and
writes ``bench/results/ingest.json``. Targets: rate >= 0.75 of bare; p99 < 25 ms at
1,000 req/s.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

from bench.common import PY, ROOT, Procs, env, table, write
from config import embedded_redis


def load(url: str, *args: str) -> dict[str, Any]:
    out = subprocess.run(
        [PY, "-m", "bench.loadgen", url, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env("redis://unused"),
        check=True,
    )
    return json.loads(out.stdout)


def measure(url: str, name: str, seconds: float, rate: float, connections: int) -> dict[str, Any]:
    path = f"{url}/webhooks/stripe"
    load(path, "--seconds", "2", "--prefix", f"warm-{name}-{time.time()}")  # warm up
    closed = load(
        path,
        "--seconds",
        str(seconds),
        "--connections",
        str(connections),
        "--prefix",
        f"closed-{name}-{time.time()}",
    )
    opened = load(
        path,
        "--mode",
        "open",
        "--rate",
        str(rate),
        "--seconds",
        str(seconds),
        "--connections",
        "64",
        "--prefix",
        f"open-{name}-{time.time()}",
    )
    return {"closed": closed, "open": opened}


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--web-workers", type=int, default=2)
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    with Procs() as procs:
        client = procs.redis(ROOT / "var" / "bench-redis")
        environ = env(procs.redis_url)
        for name, app in (("bare", "bench.bare:app"), ("switchboard", "webhooks.wsgi:app")):
            port = embedded_redis.free_port()
            url = procs.gunicorn(app, port, environ, args.web_workers)
            results[name] = measure(url, name, args.seconds, args.rate, args.connections)
            procs.stop([procs.children[-1]])
        accepted = client.zcard("sb:waiting")
    bare, real = results["bare"], results["switchboard"]
    ratio = real["closed"]["rate"] / bare["closed"]["rate"]
    summary = {
        "rate_ratio": round(ratio, 3),
        "target_rate_ratio": 0.75,
        "p99_at_rate_ms": round(real["open"]["p99_ms"], 2),
        "target_p99_ms": 25,
        "open_rate": args.rate,
        "tasks_queued": accepted,
        "met": ratio >= 0.75 and real["open"]["p99_ms"] < 25,
    }
    rows = []
    for name in ("bare", "switchboard"):
        c, o = results[name]["closed"], results[name]["open"]
        rows.append(
            [
                name,
                c["rate"],
                c["p50_ms"],
                c["p99_ms"],
                c["errors"],
                o["rate"],
                o["p50_ms"],
                o["p99_ms"],
                o["errors"],
            ]
        )
    print(
        table(
            f"Ingest (gunicorn {args.web_workers}x8 gthread; closed loop {args.connections} conns, "
            f"open loop {args.rate:.0f} req/s; {args.seconds:.0f} s each)",
            [
                "endpoint",
                "req/s",
                "p50 ms",
                "p99 ms",
                "err",
                f"@{args.rate:.0f}/s",
                "p50 ms",
                "p99 ms",
                "err",
            ],
            rows,
        )
    )
    print(
        f"ratio {ratio:.3f} (target >= 0.75); p99 at {args.rate:.0f}/s "
        f"{real['open']['p99_ms']:.1f} ms (target < 25); met: {summary['met']}"
    )
    for r in results.values():
        for phase in r.values():
            phase.pop("sent", None)
    path = write("ingest", {"args": vars(args), "summary": summary, "results": results})
    print(f"wrote {path.relative_to(ROOT)}")
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
