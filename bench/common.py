"""What the benchmarks share: processes (Redis, gunicorn, workers, sandbox), signed bodies,
percentiles, the results table and JSON file. Everything binds to 127.0.0.1 only."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import redis as redis_lib

from config import embedded_redis

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
CONFIG = ROOT / "bench" / "switchboard.bench.yaml"
SECRET = "whsec_bench_secret"
PY = sys.executable


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def stripe_body(event_id: str, target: int, amount: int = 4900) -> bytes:
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": "payment_intent.succeeded",
            "created": int(time.time()),
            "data": {
                "object": {
                    "id": f"pi_{event_id}",
                    "object": "payment_intent",
                    "amount_received": amount,
                    "metadata": {"perfex_customer": str(target)},
                }
            },
        },
        separators=(",", ":"),
    ).encode()


def stripe_signature(body: bytes, secret: str = SECRET, timestamp: int | None = None) -> str:
    t = timestamp or int(time.time())
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def env(redis_url: str, sandbox_url: str = "http://127.0.0.1:9", **extra: str) -> dict[str, str]:
    out = dict(os.environ)
    out.update(
        {
            "REDIS_URL": redis_url,
            "SWITCHBOARD_CONFIG": str(CONFIG),
            "SANDBOX_URL": sandbox_url,
            "PYTHONPATH": str(ROOT),
            "SWITCHBOARD_LOG_LEVEL": os.environ.get("SWITCHBOARD_LOG_LEVEL", "INFO"),
        }
    )
    out.update(extra)
    return out


class Procs:
    """Child processes, stopped together (TERM, then KILL) on exit."""

    def __init__(self) -> None:
        self.children: list[subprocess.Popen[bytes]] = []
        self.roles: dict[int, str] = {}  # pid -> role, for cpu_seconds()
        self.redis_url = ""

    def start(
        self, command: list[str], environ: dict[str, str], role: str = "other"
    ) -> subprocess.Popen[bytes]:
        log = open(RESULTS / "last-run.log", "ab")  # noqa: SIM115 - kept for the child's life
        process = subprocess.Popen(command, cwd=ROOT, env=environ, stdout=log, stderr=log)
        self.children.append(process)
        self.roles[process.pid] = role
        return process

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds (user + system) used so far by each role's live processes and their
        children (gunicorn's workers), so a benchmark can say where the CPU went."""
        out: dict[str, float] = {}
        for process in self.children:
            if process.poll() is None:
                role = self.roles.get(process.pid, "other")
                out[role] = out.get(role, 0.0) + tree_cpu_seconds(process.pid)
        return out

    @staticmethod
    def host_jiffies() -> dict[str, int]:
        """This machine's CPU time so far (clock ticks, all cores): ``total`` and ``steal``,
        the time the hypervisor ran someone else while we had work (Linux /proc/stat)."""
        with open("/proc/stat") as stat:
            ticks = [int(t) for t in stat.readline().split()[1:]]
        return {"total": sum(ticks[:8]), "steal": ticks[7] if len(ticks) > 7 else 0}

    def redis(self, directory: Path) -> redis_lib.Redis:
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("*.aof*"):
            old.unlink()
        port = embedded_redis.free_port()
        args = embedded_redis.server_args(directory, port, fsync="everysec")
        server = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        self.children.append(server)
        self.roles[server.pid] = "redis"
        self.redis_url = f"redis://127.0.0.1:{port}/0"
        # this process's Celery app (bench.noop) must use it too, not an embedded Redis
        os.environ["REDIS_URL"] = self.redis_url
        embedded_redis.wait_ready(self.redis_url)
        return redis_lib.Redis.from_url(self.redis_url)

    def gunicorn(
        self, app: str, port: int, environ: dict[str, str], workers: int = 2, role: str = "web"
    ) -> str:
        from webhooks.supervisor import web_command

        command = web_command(port, workers)
        command[-1] = app
        self.start(command, environ, role)
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/healthz")
        return url

    def workers(
        self,
        environ: dict[str, str],
        count: int = 2,
        concurrency: int = 8,
        include: str | None = None,
    ) -> list[subprocess.Popen[bytes]]:
        from webhooks.supervisor import worker_command

        out = []
        for i in range(count):
            command = worker_command(concurrency, f"bench{i}")
            if include:
                command += ["-I", include]
            out.append(self.start(command, environ, "worker"))
        return out

    def sandbox(self, environ: dict[str, str], latency_ms: float) -> str:
        port = embedded_redis.free_port()
        self.start([PY, "-m", "webhooks.cli", "sandbox", "--port", str(port)], environ, "simulator")
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/")
        httpx.post(f"{url}/perfexcrm/_sim/knobs", json={"latency_ms": latency_ms})
        return url

    def stop(self, processes: list[subprocess.Popen[bytes]] | None = None) -> None:
        targets = processes if processes is not None else list(reversed(self.children))
        for p in targets:
            if p.poll() is None:
                p.terminate()
        for p in targets:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
            if p in self.children:
                self.children.remove(p)

    def __enter__(self) -> Procs:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "last-run.log").write_bytes(b"")
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and its live descendants (Linux /proc; 0 elsewhere)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            kids = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except (OSError, IndexError, ValueError):
            continue
        pending.extend(int(k) for k in kids)
    return total


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: round(after.get(k, 0.0) - before.get(k, 0.0), 2) for k in sorted(after)}


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up; see bench/results/last-run.log")


def seed_targets(sandbox_url: str, count: int) -> None:
    """Customers 1000..1000+count in the PerfexCRM simulator (the benchmarks' targets)."""
    with httpx.Client(base_url=sandbox_url, timeout=10) as http:
        template = http.get("/perfexcrm/_sim/records/7").json()
        for i in range(count):
            rid = str(1000 + i)
            http.put(f"/perfexcrm/_sim/records/{rid}", json={**template, "userid": rid})


def wait_workers(client: redis_lib.Redis, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while client.hlen("sb:heartbeats") < count:
        if time.monotonic() > deadline:
            raise RuntimeError("workers did not start; see bench/results/last-run.log")
        time.sleep(0.1)


def table(title: str, header: list[str], rows: list[list[Any]]) -> str:
    cells = [header] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(str(r[i])) for r in cells) for i in range(len(header))]
    lines = [title, "  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row in cells[1:]:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


def write(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {
        "benchmark": name,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        **data,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path
