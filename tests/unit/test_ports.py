"""``up`` names a port in use before it starts anything, but a port whose last server
left connections in TIME-WAIT is free (the servers bind with SO_REUSEADDR)."""

from __future__ import annotations

import socket

import pytest

from config.loader import load_config
from config.settings import EnvError, Settings
from tests.helpers import TEST_CONFIG
from webhooks.supervisor import Supervisor, port_free, port_problem, web_command


def _time_wait_port() -> int:
    """A port whose listener is gone, leaving a server-side connection in TIME-WAIT."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    served, _ = listener.accept()
    served.close()  # the server closes first: its side waits in TIME-WAIT
    client.recv(1)
    client.close()
    listener.close()
    return port


def test_a_port_left_in_time_wait_by_the_last_run_is_free():
    assert port_free(_time_wait_port())


def test_a_port_something_listens_on_is_not():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert not port_free(busy.getsockname()[1])


def test_the_web_runs_without_gunicorns_per_user_control_socket():
    assert "--no-control-socket" in web_command(8000)


@pytest.mark.parametrize(
    ("given", "bind"),
    [
        ("0.0.0.0", "0.0.0.0:8000"),
        ("::", "[::]:8000"),
        ("[::1]", "[::1]:8000"),
        ("web", "web:8000"),
    ],
)
def test_the_web_binds_the_host_it_is_given_v6_in_brackets(given, bind):
    # "::" made gunicorn say "'' is not a valid port number"
    host = Settings.from_env({"SWITCHBOARD_HOST": given}).host
    command = web_command(8000, 2, host)
    assert command[command.index("--bind") + 1] == bind


@pytest.mark.parametrize("given", ["not a host", "http://0.0.0.0", "0.0.0.0:8000", "-x"])
def test_a_host_that_is_no_address_is_named_at_start(given):
    with pytest.raises(EnvError, match="SWITCHBOARD_HOST must be an IP address"):
        Settings.from_env({"SWITCHBOARD_HOST": given})


def test_up_says_a_host_it_cannot_listen_on_is_that_not_a_port_in_use(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("SANDBOX_URL", "http://127.0.0.1:9")
    # SWITCHBOARD_HOST=not-a-host (or ::1 checked as IPv4) was "port 8000 is in use"
    env = {"SWITCHBOARD_HOST": "no-such-host.invalid", "SWITCHBOARD_VAR_DIR": str(tmp_path)}
    up = Supervisor(Settings.from_env(env), load_config(TEST_CONFIG))
    assert up.run() == 1
    said = capsys.readouterr().err
    assert "in use" not in said and "'no-such-host.invalid' is no address to listen on" in said
    assert up.children == []  # nothing was started


def test_an_ipv6_loopback_port_is_checked_as_ipv6():
    with socket.socket(socket.AF_INET6) as busy:
        busy.bind(("::1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert port_problem(port, "::1") == "in use"
    assert port_free(port, "::1")
