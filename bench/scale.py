"""Benchmark 3, scale: time per task at backlogs of 1k, 10k and 100k; Redis memory per
queued task and per dead letter.

``python -m bench.scale [--sizes 1000,10000,100000] [--latency-ms 20] [--rounds 4]``
drains each backlog as :mod:`bench.e2e` does (held, then released to two workers that
have just run 500 warm-up tasks, so first-call costs are not charged to the smallest
size) on a fresh Redis. The smaller sizes drain ``--rounds`` times, before and after the
largest (:func:`sandwich`), and their medians are compared with it: a 1k drain lasts two
seconds (its steady part under two), and this VM's speed drifts by +-30% within minutes;
two rounds each still let one slow round move the 1k median by 10% (session 7). Time per
task is given for the whole drain and for its steady part (10% -> 90% done, without the
fixed start and tail costs); the target is judged on the latter. Memory per queued task =
``used_memory`` growth while filling / tasks; per dead letter = growth while putting
1,000 dead letters (each with 3 attempts) / 1,000. Target: time per task within 10% from
the smallest to the largest backlog. Prints a table and writes
``bench/results/scale.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

import redis as redis_lib

from bench.common import ROOT, Procs, table, write
from bench.e2e import drain, fill, setup


def memory_per_task(client: redis_lib.Redis, count: int = 10000) -> float:
    client.flushdb()
    before = client.info("memory")["used_memory"]
    fill(client, count, time.time() + 86400)
    return (client.info("memory")["used_memory"] - before) / count


def memory_per_dead_letter(client: redis_lib.Redis, count: int = 1000) -> float:
    from worker.deadletter import DeadLetters
    from worker.model import UpdateTask
    from worker.redact import Redactor

    client.flushdb()
    letters = DeadLetters(client, Redactor(()), 7 * 86400)
    before = client.info("memory")["used_memory"]
    for i in range(count):
        task = UpdateTask(
            "stripe",
            f"evt-{i}",
            "payment_intent.succeeded",
            "rule",
            0,
            "perfex",
            "update_customer",
            str(1000 + i),
            {"vat": f"paid {i}"},
            time.time(),
        )
        attempts = [
            {
                "at": time.time(),
                "duration": 0.02,
                "outcome": "unavailable",
                "status": 503,
                "message": "perfex answered 503",
                "excerpt": '{"status":false,"message":"Service unavailable"}',
            }
        ] * 3
        letters.put(task, "exhausted", "perfex answered 503", attempts)
    return (client.info("memory")["used_memory"] - before) / count


def sandwich(sizes: list[int], rounds: int) -> list[int]:
    """Drain order: the smaller sizes' rounds split before and after the largest (run
    once, minutes long), e.g. 1k 10k 100k 10k 1k, so a drift in this VM's speed while
    the largest drains weighs on the smaller sizes' medians from both sides."""
    small, largest = sizes[:-1], sizes[-1:]
    before = small * ((rounds + 1) // 2)
    after = list(reversed(small)) * (rounds // 2)
    return before + largest + after


def median_round(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One size's rounds as one: the median of each time per task, every round kept."""
    out = dict(runs[0])
    for key in ("ms_per_task", "middle_ms_per_task", "rate"):
        values = [r[key] for r in runs if r[key] is not None]
        out[key] = statistics.median(values) if values else None
    out["seconds"] = statistics.median(r["seconds"] for r in runs)
    out["rounds"] = runs
    return out


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--latency-ms", type=float, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--rounds", type=int, default=4, help="drains of each smaller size, around the largest"
    )
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    rounds: dict[int, list[dict[str, Any]]] = {size: [] for size in sizes}
    with Procs() as procs:
        environ, client = setup(procs, args.latency_ms)
        per_task = memory_per_task(client)
        per_dead = memory_per_dead_letter(client)
        for size in sandwich(sizes, args.rounds):
            client.flushdb()
            run = drain(
                procs,
                environ,
                client,
                size,
                args.workers,
                args.concurrency,
                timeout=max(120, size / 20),
                warmup=500,
            )
            rounds[size].append(run)
            print(f"round: {size} tasks, {run['middle_ms_per_task']} ms/task steady", flush=True)
    runs = [median_round(rounds[size]) for size in sizes]
    base = runs[0]["ms_per_task"]
    spread = max(abs(r["ms_per_task"] - base) / base for r in runs)
    steady = [r["middle_ms_per_task"] for r in runs]
    steady_spread = (
        max(abs(s - steady[0]) / steady[0] for s in steady) if None not in steady else None
    )
    summary = {
        "flat_within": round(spread, 3),
        "steady_flat_within": None if steady_spread is None else round(steady_spread, 3),
        "target": 0.10,
        # judged on the steady part (10% -> 90% done): a drain's start and tail are fixed
        # costs that weigh on a 2-second drain and vanish in a 4-minute one
        "met": steady_spread is not None and steady_spread <= 0.10,
        "bytes_per_queued_task": round(per_task),
        "bytes_per_dead_letter": round(per_dead),
    }
    print(
        table(
            f"Scale (simulator latency {args.latency_ms:.0f} ms, {args.workers} workers x "
            f"{args.concurrency} threads)",
            ["backlog", "done", "seconds", "tasks/s", "ms/task", "vs first"]
            + ["ms/task 10-90%", "vs first"],
            [
                [
                    r["tasks"],
                    r["done"],
                    r["seconds"],
                    r["rate"],
                    r["ms_per_task"],
                    f"{(r['ms_per_task'] / base - 1) * 100:+.1f}%",
                    r["middle_ms_per_task"] or "-",
                    f"{(r['middle_ms_per_task'] / steady[0] - 1) * 100:+.1f}%"
                    if r["middle_ms_per_task"] and steady[0]
                    else "-",
                ]
                for r in runs
            ],
        )
    )
    steady_text = "-" if steady_spread is None else f"{steady_spread * 100:.1f}%"
    print(
        f"time per task spread: whole drains {spread * 100:.1f}%, steady part (10% -> 90% "
        f"done) {steady_text} (target <= 10%); met: {summary['met']}"
    )
    print(
        f"Redis memory: {per_task:,.0f} B per queued task (event + task record + queue "
        f"entries), {per_dead:,.0f} B per dead letter"
    )
    path = write("scale", {"args": vars(args), "summary": summary, "runs": runs})
    print(f"wrote {path.relative_to(ROOT)}")
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
