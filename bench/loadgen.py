"""A small HTTP/1.1 load generator (asyncio, raw keep-alive sockets): run as its own process.

``python -m bench.loadgen URL --mode closed --connections 32 --seconds 10``: as fast as
the server answers. ``--mode open --rate 1000``: requests start on a fixed schedule and
latency counts from the *scheduled* start (no coordinated omission). Bodies are signed
Stripe events with fresh ids (``--prefix``), so each one is accepted, not a duplicate.
Prints one JSON object: count, errors, seconds, rate, latencies (ms) and send times.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from urllib.parse import urlsplit

from bench.common import percentile, stripe_body, stripe_signature


def build_request(host: str, path: str, event_id: str, target: int) -> bytes:
    body = stripe_body(event_id, target)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Stripe-Signature: {stripe_signature(body)}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes) -> int:
    writer.write(req)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    if length:
        await reader.readexactly(length)
    return status


async def run(args: argparse.Namespace) -> dict:
    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    sent: list[tuple[str, float]] = []
    errors = 0
    counter = 0

    def next_request() -> tuple[str, bytes]:
        nonlocal counter
        counter += 1
        event_id = f"{args.prefix}-{counter}"
        target = 1000 + counter % args.targets
        return event_id, build_request(url.netloc, url.path, event_id, target)

    started = loop.time()
    stop_at = started + args.seconds
    period = 1.0 / args.rate if args.rate else 0.0

    async def connection(index: int) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        n = 0
        while True:
            if args.mode == "open":
                due = started + (index + n * args.connections) * period
                n += 1
                if due >= stop_at:
                    break
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                begin = due
            else:
                begin = loop.time()
                if begin >= stop_at:
                    break
            event_id, req = next_request()
            wall = time.time() - (loop.time() - begin)
            try:
                status = await one(reader, writer, req)
            except (OSError, asyncio.IncompleteReadError):
                errors += 1
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                continue
            if status >= 300:
                errors += 1
            latencies.append((loop.time() - begin) * 1000)
            sent.append((event_id, wall))
        writer.close()

    await asyncio.gather(*(connection(i) for i in range(args.connections)))
    took = loop.time() - started
    return {
        "mode": args.mode,
        "target_rate": args.rate,
        "connections": args.connections,
        "count": len(latencies),
        "errors": errors,
        "seconds": round(took, 3),
        "rate": len(latencies) / took,
        "p50_ms": percentile(latencies, 50),
        "p90_ms": percentile(latencies, 90),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies, default=float("nan")),
        "sent": sent if args.send_times else [],
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--mode", choices=["closed", "open"], default="closed")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--prefix", default="evt")
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--send-times", action="store_true")
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main(sys.argv[1:])
