"""Benchmark 2, end to end: vendor updates applied/s from a queued backlog vs a no-op drain.

``python -m bench.e2e [--tasks 20000] [--latency-ms 20] [--rounds 3] [--steady-rate 200]``
runs, on a private Redis and the simulators (PerfexCRM latency ``--latency-ms``), two
Celery workers as ``switchboard worker`` runs them (threads pool, 8 each):

1. no-op drain: ``--tasks`` messages of :mod:`bench.noop` (sleeping the same latency)
   queued first, then drained; rate from first to last task;
2. Switchboard drain: ``--tasks`` events stored through the durable queue (as ingest
   stores them), held, then released at once; rate from release until every task is
   applied; the ratio of the two is the target (>= 0.8). The two drains alternate in
   ABBA order for ``--rounds`` each (this VM's speed drifts by +-30% within minutes: a
   single pair measured 0.70 and 0.90 on the same code), each on an emptied Redis, and
   the ratio is that of the median rates; every round is kept in the JSON;
3. steady: signed webhooks through gunicorn at ``--steady-rate`` events/s for
   ``--steady-seconds``; webhook-to-vendor latency = task applied - request sent.

Prints a table and writes ``bench/results/e2e.json``. :func:`drain` is reused by
:mod:`bench.scale`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

import redis as redis_lib

from bench.common import (
    PY,
    ROOT,
    Procs,
    cpu_delta,
    env,
    percentile,
    seed_targets,
    table,
    wait_workers,
    write,
)
from config import embedded_redis

TARGETS = 2000


def fill(
    client: redis_lib.Redis, count: int, hold_until: float, occurred_base: float | None = None
) -> float:
    """Store ``count`` events of one task each, due from ``hold_until`` on in the order
    they were stored (as webhooks arriving one after another); returns seconds.

    Events occur from ``occurred_base`` (default: now) on, one millisecond apart."""
    from worker.model import Event, UpdateTask
    from worker.queue import Queue

    queue = Queue(client)
    started = time.perf_counter()
    base = time.time() if occurred_base is None else occurred_base
    for i in range(count):
        eid = f"bench-{time.time()}-{i}"
        target = str(1000 + i % TARGETS)
        task = UpdateTask(
            "stripe",
            eid,
            "payment_intent.succeeded",
            "payment-activates-crm",
            0,
            "perfex",
            "update_customer",
            target,
            {"active": True, "vat": f"paid {i}"},
            base + i / 1000,
        )
        event = Event("stripe", eid, task.event_type, task.occurred_at, base, {"i": i}, {})
        queue.store_event(event, [task], now=hold_until + i / 1000)
    return time.perf_counter() - started


def outcomes(client: redis_lib.Redis) -> tuple[dict[str, int], list[float]]:
    """How many task records are in each state (applied, stale, dead, queued...), and the
    duration of each task's last vendor call as the worker timed it (milliseconds)."""
    counts: dict[str, int] = {}
    calls: list[float] = []
    batch: list[bytes] = []

    def tally() -> None:
        pipe = client.pipeline(transaction=False)
        for key in batch:
            pipe.hmget(key, "state", "attempts")
        for state, attempts in pipe.execute():
            name = state.decode() if state else "gone"
            counts[name] = counts.get(name, 0) + 1
            tried = json.loads(attempts) if attempts else []
            if tried:
                calls.append(tried[-1]["duration"] * 1000)
        batch.clear()

    for key in client.scan_iter("sb:task:*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            tally()
    tally()
    return dict(sorted(counts.items())), calls


def run_warmup(client: redis_lib.Redis, count: int, timeout: float = 120) -> None:
    """Run ``count`` tasks due now to completion (the held backlog stays held)."""
    waiting = client.zcard("sb:waiting")
    # events of a day ago: the field versions they leave are older than the backlog's,
    # so no backlog task turns stale because of the warm-up
    fill(client, count, time.time() - 3600, occurred_base=time.time() - 86400)
    client.rpush("sb:wake", "1")
    deadline = time.monotonic() + timeout
    while client.zcard("sb:waiting") > waiting and time.monotonic() < deadline:
        time.sleep(0.05)


def middle_ms_per_task(progress: list[tuple[float, int]], count: int) -> float | None:
    """Milliseconds per task between 10% and 90% done: the steady part of a drain, without
    its start (first claims and publishes) and its tail (the last messages finishing
    while other consumers are already idle), which are fixed costs per drain."""
    start = next((t for t, left in progress if left <= count * 0.9), None)
    end = next((t for t, left in progress if left <= count * 0.1), None)
    if start is None or end is None or end <= start:
        return None
    return (end - start) / (count * 0.8) * 1000


def release(client: redis_lib.Redis) -> None:
    """Make every held task due now (one atomic command) and wake the relays.

    Scaling every score by 1e-9 moves them all into the past and keeps their order (with
    equal scores Redis would order tasks by id, i.e. at random, and a task for a record
    that a later event already updated would turn ``stale`` without a vendor call)."""
    client.zunionstore("sb:due", {"sb:due": 1e-9})
    client.rpush("sb:wake", "1")


def drain(
    procs: Procs,
    environ: dict[str, str],
    client: redis_lib.Redis,
    count: int,
    workers: int,
    concurrency: int,
    timeout: float,
    warmup: int = 0,
) -> dict[str, Any]:
    """Fill a held backlog of ``count`` tasks, start workers, release, time the drain.

    ``warmup`` tasks (not counted) are run first by the same workers, so connection pools
    and first-call costs are not charged to the timed backlog."""
    filled = fill(client, count, time.time() + 10 * 86400)
    memory = client.info("memory")["used_memory"]
    started_workers = procs.workers(environ, workers, concurrency)
    wait_workers(client, workers)
    if warmup:
        run_warmup(client, warmup)
    cpu_before = procs.cpu_seconds()
    started = time.perf_counter()
    release(client)
    deadline = time.monotonic() + timeout
    progress: list[tuple[float, int]] = []  # (seconds since release, tasks left)
    while left_now := client.zcard("sb:waiting"):
        progress.append((time.perf_counter() - started, left_now))
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    took = time.perf_counter() - started
    left = client.zcard("sb:waiting")
    cpu = cpu_delta(cpu_before, procs.cpu_seconds())
    procs.stop(started_workers)
    client.delete("sb:heartbeats")
    states, calls = outcomes(client)
    done = count - left
    return {
        "tasks": count,
        "done": done,
        "seconds": round(took, 3),
        "rate": done / took,
        "ms_per_task": took / max(done, 1) * 1000,
        "middle_ms_per_task": middle_ms_per_task(progress, count),
        "fill_seconds": round(filled, 3),
        "used_memory_after_fill": memory,
        "timed_out": bool(left),
        "outcomes": states,
        # the vendor call as the worker timed it: the simulator's latency plus the wait
        # for a connection, for the simulator's threads and for this process's GIL
        "call_p50_ms": round(percentile(calls, 50), 1),
        "call_p99_ms": round(percentile(calls, 99), 1),
        "cpu_seconds": cpu,
        "cpu_ms_per_task": {k: round(v / max(done, 1) * 1000, 3) for k, v in cpu.items()},
    }


def noop_drain(
    procs: Procs,
    environ: dict[str, str],
    client: redis_lib.Redis,
    count: int,
    latency_ms: float,
    workers: int,
    concurrency: int,
) -> dict[str, Any]:
    from bench.noop import noop

    client.delete("bench:first", "bench:last", "bench:done")
    noop.app.conf.broker_url = environ["REDIS_URL"]
    with noop.app.producer_or_acquire() as producer:
        for _ in range(count):
            noop.apply_async(args=(latency_ms,), producer=producer)
    cpu_before = procs.cpu_seconds()
    started_workers = procs.workers(environ, workers, concurrency, include="bench.noop")
    deadline = time.monotonic() + 600
    while int(client.get("bench:done") or 0) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    done = int(client.get("bench:done") or 0)
    took = float(client.get("bench:last") or 0) - float(client.get("bench:first") or 0)
    cpu = cpu_delta(cpu_before, procs.cpu_seconds())  # workers' figure includes start-up
    procs.stop(started_workers)
    client.delete("sb:heartbeats")
    return {
        "tasks": count,
        "done": done,
        "seconds": round(took, 3),
        "rate": done / took,
        "ms_per_task": took / max(done, 1) * 1000,
        "cpu_seconds": cpu,
        "cpu_ms_per_task": {k: round(v / max(done, 1) * 1000, 3) for k, v in cpu.items()},
    }


def steady(
    procs: Procs,
    environ: dict[str, str],
    client: redis_lib.Redis,
    rate: float,
    seconds: float,
    workers: int,
    concurrency: int,
) -> dict[str, Any]:
    started_workers = procs.workers(environ, workers, concurrency)
    wait_workers(client, workers)
    port = embedded_redis.free_port()
    url = procs.gunicorn("webhooks.wsgi:app", port, environ)
    cpu_before = procs.cpu_seconds()
    out = subprocess.run(
        [
            PY,
            "-m",
            "bench.loadgen",
            f"{url}/webhooks/stripe",
            "--mode",
            "open",
            "--rate",
            str(rate),
            "--seconds",
            str(seconds),
            "--connections",
            "16",
            "--send-times",
            "--prefix",
            f"steady-{time.time()}",
            "--targets",
            str(TARGETS),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=environ,
        check=True,
    )
    load = json.loads(out.stdout)
    deadline = time.monotonic() + 120
    while client.zcard("sb:waiting") and time.monotonic() < deadline:
        time.sleep(0.1)
    cpu = cpu_delta(cpu_before, procs.cpu_seconds())
    latencies, waits, calls = [], [], []
    pipe = client.pipeline()
    for event_id, _ in load["sent"]:
        pipe.hget(f"sb:event:stripe:{event_id}", "tasks")
    task_lists = pipe.execute()
    pipe = client.pipeline()
    for tasks in task_lists:
        pipe.hmget(f"sb:task:{json.loads(tasks)[0]}", "attempts", "queued_at")
    for (_, sent_at), (attempts, queued_at) in zip(load["sent"], pipe.execute(), strict=True):
        last = json.loads(attempts)[-1]
        latencies.append((last["at"] + last["duration"] - sent_at) * 1000)
        waits.append((last["at"] - float(queued_at)) * 1000)  # stored -> vendor call starts
        calls.append(last["duration"] * 1000)
    procs.stop(started_workers + [procs.children[-1]])
    client.delete("sb:heartbeats")
    return {
        "rate": rate,
        "seconds": seconds,
        "events": len(latencies),
        "ingest_p99_ms": load["p99_ms"],
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies),
        # where the time goes: queued (stored -> vendor call starts), then the call itself
        "queued_p50_ms": percentile(waits, 50),
        "queued_p99_ms": percentile(waits, 99),
        "call_p50_ms": percentile(calls, 50),
        "call_p99_ms": percentile(calls, 99),
        "cpu_ms_per_event": {
            k: round(v / max(len(latencies), 1) * 1000, 3) for k, v in cpu.items()
        },
    }


def setup(procs: Procs, latency_ms: float) -> tuple[dict[str, str], redis_lib.Redis]:
    client = procs.redis(ROOT / "var" / "bench-redis")
    sandbox = procs.sandbox(env(procs.redis_url), latency_ms)
    seed_targets(sandbox, TARGETS)
    return env(procs.redis_url, sandbox), client


def interleaved(rounds: int) -> list[str]:
    """ABBA order (noop, switchboard, switchboard, noop, ...): a drift in the machine's
    speed during the run hits both drains alike."""
    order: list[str] = []
    for i in range(rounds):
        order += ["noop", "switchboard"] if i % 2 == 0 else ["switchboard", "noop"]
    return order


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median rate (the lower middle one for an even count)."""
    ordered = sorted(runs, key=lambda r: r["rate"])
    return ordered[(len(ordered) - 1) // 2]


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--latency-ms", type=float, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="drains of each kind, ABBA")
    parser.add_argument("--steady-rate", type=float, default=200)
    parser.add_argument("--steady-seconds", type=float, default=15)
    args = parser.parse_args(argv)
    runs: dict[str, list[dict[str, Any]]] = {"noop": [], "switchboard": []}
    with Procs() as procs:
        environ, client = setup(procs, args.latency_ms)
        for kind in interleaved(args.rounds):
            client.flushdb()  # each drain starts from an empty Redis (targets: simulator)
            if kind == "noop":
                run = noop_drain(
                    procs,
                    environ,
                    client,
                    args.tasks,
                    args.latency_ms,
                    args.workers,
                    args.concurrency,
                )
            else:
                run = drain(procs, environ, client, args.tasks, args.workers, args.concurrency, 900)
            runs[kind].append(run)
            print(f"round: {kind} {run['rate']:.1f} tasks/s", flush=True)
        client.flushdb()
        held = steady(
            procs,
            environ,
            client,
            args.steady_rate,
            args.steady_seconds,
            args.workers,
            args.concurrency,
        )
    noop, real = median_run(runs["noop"]), median_run(runs["switchboard"])
    ratio = real["rate"] / noop["rate"]
    summary = {
        "rate_ratio": round(ratio, 3),
        "round_rates": {k: [round(r["rate"], 1) for r in v] for k, v in runs.items()},
        "target_rate_ratio": 0.8,
        "met": ratio >= 0.8,
        "steady_p50_ms": round(held["p50_ms"], 1),
        "steady_p99_ms": round(held["p99_ms"], 1),
    }
    print(
        table(
            f"End to end ({args.tasks:,} tasks, simulator latency {args.latency_ms:.0f} ms, "
            f"{args.workers} workers x {args.concurrency} threads; median of "
            f"{args.rounds} interleaved rounds each)",
            ["drain", "tasks", "seconds", "tasks/s", "ms/task"],
            [
                ["celery no-op", noop["done"], noop["seconds"], noop["rate"], noop["ms_per_task"]],
                ["switchboard", real["done"], real["seconds"], real["rate"], real["ms_per_task"]],
            ],
        )
    )
    print(f"ratio of the medians {ratio:.3f} (target >= 0.8); met: {summary['met']}")
    print(f"every round, tasks/s (ABBA order): {summary['round_rates']}")
    print(f"Switchboard task outcomes: {real['outcomes']}")
    print(
        f"vendor call as the worker timed it: p50 {real['call_p50_ms']} ms, "
        f"p99 {real['call_p99_ms']} ms (simulator latency {args.latency_ms:g} ms)"
    )
    for name, run in (("celery no-op", noop), ("switchboard", real)):
        shares = ", ".join(f"{k} {v:.2f}" for k, v in run["cpu_ms_per_task"].items())
        print(f"CPU ms per task, {name}: {shares}")
    print(
        f"steady {args.steady_rate:.0f} events/s for {args.steady_seconds:.0f} s: "
        f"webhook-to-vendor p50 {held['p50_ms']:.1f} ms, p99 {held['p99_ms']:.1f} ms "
        f"({held['events']} events; ingest p99 {held['ingest_p99_ms']:.1f} ms)"
    )
    path = write(
        "e2e",
        {
            "args": vars(args),
            "summary": summary,
            "noop": noop,
            "switchboard": real,
            "rounds": runs,
            "steady": held,
        },
    )
    print(f"wrote {path.relative_to(ROOT)}")
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
