"""``switchboard up`` and the parts it runs, one command each: ``web``, ``worker``,
``sandbox``."""

from __future__ import annotations

import contextlib
import os
import sys

import click

from webhooks.cli.base import echo, load_or_exit, main, settings_or_exit


@main.command()
def up() -> None:
    """Run everything: Redis (embedded unless REDIS_URL), sandbox, web, worker.

    Ports: PORT (8000) for the web on SWITCHBOARD_HOST (127.0.0.1),
    SWITCHBOARD_SANDBOX_PORT (8100) for the sandbox; state in SWITCHBOARD_VAR_DIR (./var;
    one `up` per directory).
    """
    from webhooks.supervisor import Supervisor

    settings = settings_or_exit()
    # the demo config's vendors point at ${SANDBOX_URL:-http://127.0.0.1:8100}: another
    # sandbox port must move them too, or tasks retry against a port nobody serves
    os.environ.setdefault("SANDBOX_URL", f"http://127.0.0.1:{settings.sandbox_port}")
    sys.exit(Supervisor(settings, load_or_exit()).run())


@main.command()
@click.option(
    "--workers",
    default=2,
    show_default=True,
    type=click.IntRange(1, 64),
    help="gunicorn worker processes",
)
def web(workers: int) -> None:
    """Run the web service under gunicorn on $PORT."""
    from webhooks.supervisor import web_command

    load_or_exit()  # fail early and clearly on a bad config
    _share_redis()
    settings = settings_or_exit()
    command = web_command(settings.port, workers, settings.host)
    os.execvp(command[0], command)


def _share_redis() -> None:
    """Settle the Redis URL once, here, for every process the command starts (gunicorn's
    workers): with REDIS_URL unset, they all use the one embedded Redis found or started
    now."""
    from config.embedded_redis import resolve_redis_url

    os.environ["REDIS_URL"] = resolve_redis_url(settings_or_exit())


@main.command()
@click.option("--concurrency", "-c", default=8, show_default=True, type=click.IntRange(1, 256))
@click.option("--name", default="worker", show_default=True)
def worker(concurrency: int, name: str) -> None:
    """Run a Celery worker (same as `celery -A worker worker --pool threads`)."""
    from webhooks.supervisor import worker_command

    load_or_exit()  # also checks the environment: fail here, clearly, not in the worker
    _share_redis()
    command = worker_command(concurrency, name)
    os.execvp(command[0], command)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8100, show_default=True, type=click.IntRange(1, 65535))
def sandbox(host: str, port: int) -> None:
    """Run the vendor simulators (all of them, one server, /<kind> each)."""
    from sandbox.server import SIMULATORS, serve_forever

    echo(f"sandbox on http://{host}:{port}/ ({', '.join(sorted(SIMULATORS))})")
    with contextlib.suppress(KeyboardInterrupt):
        serve_forever(host, port)
