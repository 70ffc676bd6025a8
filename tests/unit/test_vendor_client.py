"""The connectors' HTTP client: no cookies carried between calls, URLs joined like httpx."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from worker.vendors.http import VendorClient


class _Echo(BaseHTTPRequestHandler):
    """Answers every GET with the path and Cookie header it got, and sets a cookie."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body = json.dumps({"path": self.path, "cookie": self.headers.get("Cookie")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Set-Cookie", "session=abc123; Path=/")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture(scope="module")
def echo_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_a_cookie_set_by_one_answer_is_not_sent_with_the_next_call(echo_url):
    with VendorClient(base_url=echo_url) as client:
        first = client.get(client.url("/a"))
        assert first.headers["set-cookie"].startswith("session=")
        second = client.get(client.url("/b")).json()
    assert second == {"path": "/b", "cookie": None}
    assert not client.cookies


def test_cookies_cannot_be_configured_on_it(echo_url):
    with pytest.raises(ValueError), VendorClient(base_url=echo_url) as client:
        client.cookies = {"session": "x"}


@pytest.mark.parametrize(
    ("base", "path", "expected"),
    [
        ("http://h/perfexcrm", "/api/customers/7", "http://h/perfexcrm/api/customers/7"),
        ("http://h/perfexcrm/", "api/customers/7", "http://h/perfexcrm/api/customers/7"),
        ("http://h", "/api?x=1", "http://h/api?x=1"),
        ("http://h/p", "https://other/x", "https://other/x"),
    ],
)
def test_urls_are_joined_as_httpx_joins_them(base, path, expected):
    with VendorClient(base_url=base) as client, httpx.Client(base_url=base) as plain:
        assert str(client.url(path)) == expected
        assert client.url(path) == plain.build_request("GET", path).url
        assert client.url(path) is client.url(path)  # joined once, then reused


def test_the_path_reaches_the_server_unchanged(echo_url):
    with VendorClient(base_url=echo_url + "/base") as client:
        assert client.get(client.url("/x/1?q=a%20b")).json()["path"] == "/base/x/1?q=a%20b"


def test_a_connection_error_names_the_host_it_could_not_reach():
    # "porta: ConnectError calling /rest/Session/login" did not say where it was calling
    from worker.vendors import errors as vendor_errors
    from worker.vendors.base import VendorInstance
    from worker.vendors.perfexcrm import PerfexCRM

    instance = VendorInstance(
        name="perfex",
        kind="perfexcrm",
        base_url="http://127.0.0.1:9/perfexcrm",
        auth={"token": "t0ken-for-tests"},
        timeout=1,
    )
    connector = PerfexCRM(instance)
    try:
        with pytest.raises(vendor_errors.Unavailable) as caught:
            connector.apply("update_customer", "7", {"city": "Leeds"})
    finally:
        connector.close()
    assert "127.0.0.1:9/perfexcrm" in str(caught.value)


def test_cli_actions_name_the_account_when_user_is_unset(monkeypatch):
    import getpass

    from webhooks.cli.base import who as _who

    monkeypatch.delenv("USER", raising=False)
    monkeypatch.delenv("USERNAME", raising=False)
    assert _who() == f"cli:{getpass.getuser()}"


def test_a_password_in_a_base_url_is_a_secret_and_never_named_in_an_error(tmp_path):
    from config.embedded_redis import free_port
    from config.loader import load_config
    from worker.vendors import connector_for, errors

    closed = free_port()  # nothing listens: the call fails to connect
    config = tmp_path / "switchboard.yaml"
    config.write_text(
        "sources: {}\nrules: []\nvendors:\n  perfex:\n    kind: perfexcrm\n"
        f"    base_url: 'http://proxy:S3cret%2FPw@127.0.0.1:{closed}/crm'\n"
        "    auth: {token: perfex-token}\n"
    )
    loaded = load_config(config)
    assert {"S3cret%2FPw", "S3cret/Pw"} <= loaded.secrets  # redacted from every log line
    connector = connector_for(loaded.vendors["perfex"])
    with pytest.raises(errors.Unavailable) as failed:
        connector.send("PUT", "/api/customers/7", json={"city": "Leeds"})
    assert f"calling http://127.0.0.1:{closed}/crm/api/customers/7" in str(failed.value)
    assert "S3cret" not in str(failed.value) and "proxy" not in str(failed.value)
