"""``up`` names a port in use before it starts anything, but a port whose last server
left connections in TIME-WAIT is free (the servers bind with SO_REUSEADDR)."""

from __future__ import annotations

import socket

from webhooks.supervisor import port_free, web_command


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
