"""Settings from the environment: defaults, parsed values, and every bad value named."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from config import embedded_redis
from config.environment import EnvError, Reader
from config.loader import load_config
from config.model import demo_secrets
from config.settings import Settings
from tests.helpers import ROOT, TEST_CONFIG


def test_unset_and_empty_variables_take_the_defaults():
    for env in ({}, {"PORT": "", "SWITCHBOARD_MAX_BODY": " "}):
        settings = Settings.from_env(env)
        assert (settings.port, settings.max_body, settings.batch_max) == (8000, 1 << 20, 20)
        assert (settings.run_lease, settings.queue_lease) == (120.0, 3600.0)
        assert settings.worker_dead_after == 30.0
        assert settings.redis_url is None


def test_values_are_parsed():
    settings = Settings.from_env(
        {
            "PORT": "9000",
            "SWITCHBOARD_EVENT_TTL_DAYS": "0.5",
            "SWITCHBOARD_MAX_BODY": "2048",
            "SWITCHBOARD_RUN_LEASE": "30",
            "SWITCHBOARD_QUEUE_LEASE": "600",
            "SWITCHBOARD_BATCH_MAX": "5",
            "SWITCHBOARD_WORKER_DEAD_AFTER": "12.5",
            "SWITCHBOARD_SANDBOX_PORT": "8200",
            "SWITCHBOARD_LOG_LEVEL": "debug",
            "REDIS_URL": "redis://h:6379/1",
        }
    )
    assert settings.port == 9000 and settings.event_ttl_seconds == 43200
    assert (settings.max_body, settings.run_lease, settings.queue_lease) == (2048, 30, 600)
    assert (settings.batch_max, settings.sandbox_port) == (5, 8200)
    assert settings.worker_dead_after == 12.5
    assert settings.redis_url == "redis://h:6379/1"


def test_every_bad_value_is_named_at_once():
    with pytest.raises(EnvError) as caught:
        Settings.from_env(
            {
                "PORT": "70000",
                "SWITCHBOARD_EVENT_TTL_DAYS": "nan",
                "SWITCHBOARD_MAX_BODY": "1MB",
                "SWITCHBOARD_QUEUE_LEASE": "0",
                "SWITCHBOARD_LOG_FORMAT": "xml",
            }
        )
    assert caught.value.problems == [
        "PORT must be a whole number from 1 to 65535, not '70000'",
        "SWITCHBOARD_EVENT_TTL_DAYS must be a number above 0, not 'nan'",
        "SWITCHBOARD_MAX_BODY must be a whole number >= 1, not '1MB'",
        "SWITCHBOARD_QUEUE_LEASE must be a number above 0, not '0'",
        "SWITCHBOARD_LOG_FORMAT must be one of json, text, not 'xml'",
    ]


@pytest.mark.parametrize("raw", ["inf", "-5", "1e999", "ten"])
def test_numbers_must_be_finite_and_positive(raw):
    read = Reader({"X": raw})
    assert read.number("X", 3.0) == 3.0  # the default, and the problem noted
    with pytest.raises(EnvError, match="X must be a number above 0"):
        read.done()


@pytest.mark.parametrize(
    "url",
    [
        "127.0.0.1:6379",  # no scheme
        "http://127.0.0.1:6379",
        "redis://:hunter2@h:notaport/0",
        "redis://h:6379/notadb",
        "sentinel://:hunter2@h:1/x",
        "sentinel://:hunter2@h:port",
    ],
)
def test_a_redis_url_that_cannot_be_used_is_named_without_its_password(url):
    with pytest.raises(EnvError) as caught:
        Settings.from_env({"REDIS_URL": url})
    [problem] = caught.value.problems
    assert problem.startswith("REDIS_URL must be a redis://, rediss://, unix:// or sentinel://")
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "redis://h:6379/0",
        "rediss://:pw@h:6380",
        "unix:///tmp/r.sock",
        "sentinel://h:26379;sentinel://g",
    ],
)
def test_usable_redis_urls_are_taken(url):
    assert Settings.from_env({"REDIS_URL": url}).redis_url == url


def test_digits_outside_ascii_and_a_ttl_under_a_second_are_named():
    with pytest.raises(EnvError) as caught:
        Settings.from_env({"PORT": "\u00b2", "SWITCHBOARD_EVENT_TTL_DAYS": "0.000001"})
    assert caught.value.problems == [
        "PORT must be a whole number from 1 to 65535, not '\u00b2'",
        "SWITCHBOARD_EVENT_TTL_DAYS must make at least one second",
    ]


def test_a_blank_ops_token_is_no_token():
    assert Settings.from_env({"SWITCHBOARD_OPS_TOKEN": "   "}).ops_token is None
    assert Settings.from_env({"SWITCHBOARD_OPS_TOKEN": " tok \n"}).ops_token == "tok"


def test_choices_match_without_case_and_come_back_as_listed():
    assert Reader({"L": "Warning"}).choice("L", "INFO", ("DEBUG", "WARNING")) == "WARNING"


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PYTHONPATH": str(ROOT), "SWITCHBOARD_CONFIG": str(TEST_CONFIG)}
    environ.update(SANDBOX_URL="http://127.0.0.1:9", **env)
    return subprocess.run(
        args, cwd=ROOT, env=environ, capture_output=True, text=True, timeout=60, check=False
    )


def test_bare_gunicorn_stops_with_one_line_naming_the_variable():
    port = str(embedded_redis.free_port())
    done = _run(
        [sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "webhooks.wsgi:app"],
        SWITCHBOARD_MAX_BODY="lots",
    )
    assert done.returncode != 0
    assert "switchboard: SWITCHBOARD_MAX_BODY must be a whole number >= 1, not 'lots'" in (
        done.stderr
    )
    assert "Traceback" not in done.stderr


def test_bare_gunicorn_names_a_config_problem_too(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources: 3\n")
    done = _run(
        [sys.executable, "-m", "gunicorn", "-b", "127.0.0.1:0", "webhooks.wsgi:app"],
        SWITCHBOARD_CONFIG=str(bad),
    )
    assert done.returncode != 0 and str(bad) in done.stderr
    assert "Traceback" not in done.stderr


def test_bare_celery_stops_with_one_line_naming_the_variable():
    done = _run([sys.executable, "-c", "import worker.celery_app"], SWITCHBOARD_RUN_LEASE="-1")
    assert done.returncode == 1
    assert "SWITCHBOARD_RUN_LEASE must be a number above 0, not '-1'" in done.stderr
    assert "Traceback" not in done.stderr


DEMO_SECRETS = ("STRIPE_WEBHOOK_SECRET", "CRM_WEBHOOK_SECRET", "HUBSPOT_CLIENT_SECRET")


def test_web_refuses_signing_secrets_that_are_the_configs_own_defaults():
    # the demo config says "${STRIPE_WEBHOOK_SECRET:-whsec_demo_stripe_secret}": served
    # as is (say by the compose file with a variable forgotten), anyone who has read the
    # README could sign webhooks. web names each such secret; `up` (the demo) allows it
    demo = str(ROOT / "config" / "switchboard.yaml")
    environ = {k: v for k, v in os.environ.items() if k not in (*DEMO_SECRETS, "PORTAL_SECRET")}
    done = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-b", "127.0.0.1:0", "webhooks.wsgi:app"],
        cwd=ROOT,
        env={
            **environ,
            "PYTHONPATH": str(ROOT),
            "SWITCHBOARD_CONFIG": demo,
            "PORTAL_SECRET": "a-real-secret-of-ours",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0 and "Traceback" not in done.stderr
    for variable in DEMO_SECRETS:
        assert f"({variable} is not set)" in done.stderr, done.stderr
    assert "PORTAL_SECRET" not in done.stderr  # set: not the default
    assert "SWITCHBOARD_DEMO=1" in done.stderr


def test_which_signing_secrets_are_the_configs_own_defaults():
    demo = ROOT / "config" / "switchboard.yaml"
    given = {v: "whsec_c2VjcmV0" if v == "CRM_WEBHOOK_SECRET" else "set" for v in DEMO_SECRETS}
    config = load_config(demo, {**given, "PORTAL_SECRET": ""})  # empty: the default again
    assert config.defaulted_secrets == (("sources.portal.secret", "PORTAL_SECRET"),)
    assert demo_secrets(load_config(demo, {**given, "PORTAL_SECRET": "x"})) is None
    # vendor credentials' defaults are not signing secrets: a wrong one fails at the vendor
    assert all(path.startswith("sources.") for path, _ in load_config(demo, {}).defaulted_secrets)


def test_a_defaulted_signing_secret_is_found_under_a_dotted_source_name_too(tmp_path):
    # source names may hold dots: "sources.stripe.eu.secret" slipped past a path pattern
    config = tmp_path / "dotted.yaml"
    config.write_text(
        'sources:\n  stripe.eu: {kind: stripe, secret: "${S:-whsec_demo}"}\n'
        "vendors: {}\nrules: []\n"
    )
    found = load_config(config, {}).defaulted_secrets
    assert found == (("sources.stripe.eu.secret", "S"),)
