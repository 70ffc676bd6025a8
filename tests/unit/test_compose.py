"""docker-compose.yml and the Dockerfile, checked statically (no Docker engine here):
the services the issue asks for, commands the CLI accepts, env the code actually reads."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
import yaml

from config.loader import load_config
from config.settings import DEFAULT_CONFIG
from webhooks.cli import main

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
APP_SERVICES = ["web", "worker-1", "worker-2", "sandbox"]
SOURCES = "\n".join(
    p.read_text()
    for d in ("config", "webhooks", "worker", "sandbox")
    for p in (ROOT / d).rglob("*.py")
)


def parse_cli(args: list[str]) -> click.Context:
    """Parse a ``switchboard ...`` command line as click would, without running it."""
    assert args[0] == "switchboard"
    name, rest = args[1], args[2:]
    command = main.get_command(click.Context(main), name)
    assert command is not None, f"switchboard has no command {name!r}"
    return command.make_context(name, list(rest))


def test_the_services_are_redis_web_two_workers_and_the_sandbox():
    assert set(SERVICES) == {"redis", *APP_SERVICES}


def test_redis_keeps_an_append_only_file_on_a_named_volume():
    redis = SERVICES["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    # as docs/delivery.md promises: a 2xx only once the event is on disk, not within 1 s
    assert command[command.index("--appendfsync") + 1] == "always"
    [volume] = redis["volumes"]
    name, mount = volume.split(":")
    assert mount == "/data" and name in COMPOSE["volumes"]


@pytest.mark.parametrize("service", ["redis", *APP_SERVICES])
def test_every_service_has_a_healthcheck(service):
    check = SERVICES[service]["healthcheck"]
    assert check["test"][0] == "CMD" and check["retries"] >= 1


@pytest.mark.parametrize("service", APP_SERVICES)
def test_commands_are_ones_the_cli_accepts(service):
    parse_cli(SERVICES[service]["command"])


def test_web_runs_gunicorn_via_switchboard_web_on_all_interfaces():
    web = SERVICES["web"]
    ctx = parse_cli(web["command"])
    assert ctx.command.name == "web" and ctx.params["workers"] >= 1
    env = web["environment"]
    assert env["SWITCHBOARD_HOST"] == "0.0.0.0"
    assert web["ports"] == [f"{env['PORT']}:{env['PORT']}"]
    assert env["PORT"] in web["healthcheck"]["test"][-1]
    assert SERVICES["web"]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_the_bind_host_is_read_by_the_web_command(monkeypatch):
    from config.settings import Settings
    from webhooks.supervisor import web_command

    monkeypatch.setenv("SWITCHBOARD_HOST", "0.0.0.0")
    command = web_command(8000, 2, Settings.from_env().host)
    assert command[command.index("--bind") + 1] == "0.0.0.0:8000"
    assert "webhooks.wsgi:app" in command


def test_the_two_workers_have_distinct_names_their_healthchecks_use():
    names = []
    for service in ("worker-1", "worker-2"):
        ctx = parse_cli(SERVICES[service]["command"])
        assert ctx.command.name == "worker"
        names.append(ctx.params["name"])
        assert SERVICES[service]["healthcheck"]["test"][-3:] == [
            "-m",
            "worker.healthcheck",
            ctx.params["name"],
        ]
    assert len(set(names)) == 2


def test_sandbox_listens_where_the_apps_look_for_it():
    ctx = parse_cli(SERVICES["sandbox"]["command"])
    assert ctx.params["host"] == "0.0.0.0"
    for service in ("web", "worker-1", "worker-2"):
        env = SERVICES[service]["environment"]
        assert env["SANDBOX_URL"] == f"http://sandbox:{ctx.params['port']}"


@pytest.mark.parametrize("service", ["web", "worker-1", "worker-2"])
def test_apps_share_the_compose_redis_and_the_config_path(service):
    env = SERVICES[service]["environment"]
    assert env["REDIS_URL"] == "redis://redis:6379/0"
    assert env["SWITCHBOARD_CONFIG"] == f"/app/{DEFAULT_CONFIG}"
    assert env["SWITCHBOARD_OPS_TOKEN"].startswith("${SWITCHBOARD_OPS_TOKEN:?")


@pytest.mark.parametrize("service", ["web", "worker-1", "worker-2"])
def test_every_signing_secret_of_the_baked_in_config_must_be_given(service):
    # the demo config's ${VAR:-default} signing secrets are public (the README signs
    # with one): compose must stop when one is missing, before web refuses to start
    config = load_config(ROOT / DEFAULT_CONFIG, {})
    env = SERVICES[service]["environment"]
    for _path, variable in config.defaulted_secrets:
        assert env.get(variable, "").startswith(f"${{{variable}:?"), (service, variable)
    assert "SWITCHBOARD_DEMO" not in env


@pytest.mark.parametrize("service", APP_SERVICES)
def test_every_env_variable_is_one_the_code_or_config_reads(service):
    demo = ROOT / DEFAULT_CONFIG
    text = SOURCES + (demo.read_text() if demo.exists() else "${SANDBOX_URL}")
    for name in SERVICES[service].get("environment", {}):
        assert re.search(rf"\b{name}\b", text), f"{service}: nothing reads {name}"


def test_dockerfile_installs_the_package_and_runs_as_a_user():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.1[1-9]", text, re.M)
    assert "WORKDIR /app" in text
    assert re.search(r"pip install (--no-deps )?\.", text)
    assert re.search(r"^USER (?!root)\w+", text, re.M)
    assert "SWITCHBOARD_HOST=0.0.0.0" in text
    assert 'CMD ["switchboard", "web"]' in text


def test_worker_healthcheck_reports_a_missing_heartbeat(monkeypatch, redis_server):
    from worker import healthcheck

    monkeypatch.setenv("REDIS_URL", redis_server.url)
    assert "no heartbeat" in (healthcheck.check("nobody-here") or "")
    import socket
    import time

    import redis as redis_lib

    client = redis_lib.Redis.from_url(redis_server.url)
    client.hset("sb:heartbeats", f"w9@{socket.gethostname()}", time.time())
    assert healthcheck.check("w9") is None
    assert healthcheck.main(["w9"]) == 0


def test_workers_wait_for_the_sandbox_their_vendors_are_and_stop_gracefully():
    for service in ("worker-1", "worker-2"):
        depends = SERVICES[service]["depends_on"]
        assert depends["sandbox"] == {"condition": "service_healthy"}
        assert depends["redis"] == {"condition": "service_healthy"}
    # compose's default 10 s would kill a worker mid-call (vendor timeout 10 s, 4 requests)
    assert _seconds(SERVICES["worker-1"]["stop_grace_period"]) >= 40
    assert _seconds(SERVICES["web"]["stop_grace_period"]) > 20  # gunicorn's graceful 20 s


def test_the_sandbox_gets_no_secret():
    assert not SERVICES["sandbox"].get("environment")


def test_the_image_installs_the_versions_ci_tested_and_leaves_local_files_out():
    assert "-c constraints.txt" in (ROOT / "Dockerfile").read_text()
    assert "-c constraints.txt" in (ROOT / "Makefile").read_text()
    pinned = (ROOT / "constraints.txt").read_text()
    assert re.search(r"^celery==", pinned, re.M) and re.search(r"^redis==", pinned, re.M)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "var/", "tests/", ".hypothesis/", "*.egg-info/", ".env"} <= set(ignored)


def _seconds(value: str) -> float:
    return float(value.rstrip("s"))
