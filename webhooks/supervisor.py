"""``switchboard up``: Redis (embedded unless REDIS_URL), sandbox, web and worker as children.

Each part is a child process with the same environment; Ctrl-C (or SIGTERM) stops them
in reverse order, each given time to finish in-flight work.
"""

from __future__ import annotations

import errno
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from config import embedded_redis
from config.model import Config
from config.redis_url import shown_url
from config.settings import Settings
from webhooks.ops.auth import parse_tokens


def sandbox_wanted(config: Config, port: int) -> bool:
    """True when a vendor's base URL points at the local sandbox port."""
    for vendor in config.vendors.values():
        url = urlsplit(vendor.base_url)
        if url.hostname in ("127.0.0.1", "localhost") and url.port == port:
            return True
    return False


def port_problem(port: int, host: str = "127.0.0.1") -> str | None:
    """Why a server could not listen on ``host``:``port`` ("in use", or what the system
    said of the address), or None when it could."""
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as exc:
        return f"{host!r} is no address to listen on ({getattr(exc, 'strerror', None) or exc})"
    with socket.socket(family) as sock:
        # as the servers bind: a connection of the last run still in TIME-WAIT is no user
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return "in use"
            return f"cannot listen on {host!r} ({exc.strerror or exc})"
    return None


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    return port_problem(port, host) is None


def bind_address(host: str, port: int) -> str:
    """``host:port`` as gunicorn's ``--bind`` takes it (an IPv6 address in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def local_url(host: str, port: int) -> str:
    """Where this machine reaches a server bound to ``host`` (all interfaces: loopback)."""
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://{bind_address(host, port)}"


def token_note(setting: str | None) -> str | None:
    """How ``up`` names the ops token it was given, without printing it (the banner lands in
    journald and docker logs); None when ``up`` made one up (that one is printed)."""
    tokens = parse_tokens(setting)
    if not tokens:
        return None
    if list(tokens) == ["ops"]:
        return "token: $SWITCHBOARD_OPS_TOKEN"
    return f"operators {', '.join(tokens)}: the token after each name in $SWITCHBOARD_OPS_TOKEN"


def web_command(port: int, workers: int = 2, host: str = "127.0.0.1") -> list[str]:
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        bind_address(host, port),  # SWITCHBOARD_HOST: 0.0.0.0 in a container
        "--workers",
        str(workers),
        "--worker-class",
        "gthread",
        "--threads",
        "8",
        "--graceful-timeout",
        "20",
        "--logger-class",  # its own lines as JSON; no access log (the app writes one)
        "webhooks.gunicorn_logs.JsonLogger",
        "--no-control-socket",  # gunicorn 27's is one fixed path per user: two webs clash
        "webhooks.wsgi:app",
    ]


def worker_command(concurrency: int = 8, name: str = "worker") -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "--quiet",  # no banner: its lines are not JSON
        "-A",
        "worker",
        "worker",
        "--pool",
        "threads",
        "-c",
        str(concurrency),
        "-n",
        f"{name}@%h",
        "--without-mingle",
        "--without-gossip",
        "-l",
        "warning",
    ]


def sandbox_command(port: int) -> list[str]:
    return [sys.executable, "-m", "webhooks.cli", "sandbox", "--port", str(port)]


@dataclass
class Supervisor:
    settings: Settings
    config: Config
    children: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def start(self, name: str, command: list[str], env: dict[str, str]) -> None:
        # own session: a terminal Ctrl-C reaches only us, and we stop children gracefully
        self.children.append((name, subprocess.Popen(command, env=env, start_new_session=True)))

    def run(self) -> int:
        # one up per var dir: two would share one Redis, each worker applying the other's
        # tasks, and the second would die on the web's port and leave things broken
        with embedded_redis.var_lock(self.settings.var_dir, "up", wait=False) as alone:
            if not alone:
                print(
                    f"switchboard up already runs with {self.settings.var_dir.resolve()}: "
                    "stop it first (Ctrl-C in its terminal)",
                    file=sys.stderr,
                )
                return 1
            problems = {p: port_problem(p, host) for p, host in self.listens()}
            busy = [str(p) for p, problem in problems.items() if problem == "in use"]
            if busy:
                print(
                    f"port {', '.join(busy)} is in use: stop what holds it, or set PORT / "
                    "SWITCHBOARD_SANDBOX_PORT",
                    file=sys.stderr,
                )
                return 1
            for port, problem in problems.items():
                if problem:  # SWITCHBOARD_HOST names no address of this machine
                    print(f"cannot serve on port {port}: {problem}", file=sys.stderr)
                    return 1
            return self._run()

    def listens(self) -> list[tuple[int, str]]:
        """Where ``up`` will listen: the web's port on its host, and the sandbox's (on
        loopback) when it starts."""
        listens = [(self.settings.port, self.settings.host)]
        if sandbox_wanted(self.config, self.settings.sandbox_port):
            listens.append((self.settings.sandbox_port, "127.0.0.1"))
        return listens

    def _run(self) -> int:
        started = time.monotonic()
        env = dict(os.environ)
        env["SWITCHBOARD_CONFIG"] = str(Path(self.settings.config_path).resolve())
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), env.get("PYTHONPATH")]))
        redis_url = self.settings.redis_url
        if not redis_url:  # one left running by a `web` or `worker` run alone is used
            process, redis_url = embedded_redis.start(self.settings.var_dir)
            if process is not None:
                self.children.append(("redis", process))
        env["REDIS_URL"] = redis_url
        token = self.settings.ops_token or secrets.token_urlsafe(18)
        env["SWITCHBOARD_OPS_TOKEN"] = token
        env.setdefault("SWITCHBOARD_DEMO", "1")  # the demo config's own signing secrets serve
        shown_token = token_note(self.settings.ops_token) or f"token: {token}"
        if sandbox_wanted(self.config, self.settings.sandbox_port):
            self.start("sandbox", sandbox_command(self.settings.sandbox_port), env)
        self.start("worker", worker_command(), env)
        self.start("web", web_command(self.settings.port, host=self.settings.host), env)
        base = local_url(self.settings.host, self.settings.port)
        ready = self.wait_ready(base)
        took = time.monotonic() - started
        self.banner(base, shown_url(redis_url), shown_token, took, ready)
        return self.supervise()

    def wait_ready(self, base: str, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p.poll() is not None for _, p in self.children):
                return False
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        return False

    def banner(self, base: str, redis_url: str, token: str, took: float, ready: bool) -> None:
        """What runs where; ``redis_url`` and ``token`` as fit to print (no secret of yours)."""
        lines = [
            f"Switchboard is {'ready' if ready else 'NOT ready'} ({took:.1f} s)",
            f"  webhooks  {base}/webhooks/<source>",
            f"  health    {base}/readyz",
            f"  metrics   {base}/metrics",
            f"  ops page  {base}/ops/   ({token})",
            f"  redis     {redis_url}",
        ]
        if sandbox_wanted(self.config, self.settings.sandbox_port):
            lines.append(f"  sandbox   http://127.0.0.1:{self.settings.sandbox_port}/")
        if self.config.defaulted_secrets:  # SWITCHBOARD_DEMO lets web serve them: say so
            named = ", ".join(var for _, var in self.config.defaulted_secrets)
            lines.append(
                f"  WARNING   the config's own default signing secrets serve ({named} not "
                "set): anyone who reads the config can sign webhooks. Fine for a demo here."
            )
        lines.append("Ctrl-C stops everything.")
        print("\n".join(lines), flush=True)

    def supervise(self) -> int:
        stop = {"now": False}

        def _stop(*_: object) -> None:
            stop["now"] = True

        signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGTERM, _stop)
        code = 0
        while not stop["now"]:
            for name, process in self.children:
                if process.poll() is not None:
                    print(f"{name} exited with {process.returncode}; stopping", flush=True)
                    stop["now"], code = True, 1
            time.sleep(0.2)
        self.shutdown()
        return code

    def shutdown(self) -> None:
        for _, process in reversed(self.children):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=25)
            except subprocess.TimeoutExpired:
                process.kill()
        print("stopped", flush=True)
