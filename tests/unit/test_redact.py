"""A secret is blanked in every form a vendor may echo it: as is, form/URL-encoded, and
JSON-escaped the Python way or the PHP way (``\\/``, ``\\uXXXX``)."""

from __future__ import annotations

import io
import json
import logging
from urllib.parse import quote, quote_plus, urlencode

import httpx
import pytest

from config.logs import configure_logging
from worker.redact import MARK, Redactor
from worker.vendors import errors
from worker.vendors.base import VendorInstance
from worker.vendors.portabilling import PortaBilling

SECRET = "Ab+c/d=e9Zq é"

ECHOES = {
    "as is": f"bad token {SECRET}",
    "form body": urlencode({"login": "api", "password": SECRET}),
    "query": f"/login?password={quote(SECRET, '')}",
    "quote_plus": quote_plus(SECRET),
    "python json": json.dumps({"token": SECRET}),
    "php json": json.dumps({"token": SECRET}).replace("/", "\\/"),
}


@pytest.mark.parametrize("echo", ECHOES.values(), ids=ECHOES.keys())
def test_every_form_of_a_secret_is_blanked(echo):
    text = Redactor([SECRET]).text(echo)
    assert MARK in text
    for fragment in ("Ab+c", "Ab%2Bc", "e9Zq"):
        assert fragment not in text, text


@pytest.mark.parametrize("echo", ECHOES.values(), ids=ECHOES.keys())
def test_a_log_line_carrying_an_echo_is_blanked(echo):
    line = json.dumps({"msg": f"vendor said: {echo}"})
    assert "e9Zq" not in Redactor([SECRET]).json_text(line)


def test_a_connector_blanks_a_credential_echoed_inside_its_form_encoded_json():
    # PortaBilling's login sends {"login", "token"} as JSON in a form field; a vendor (or
    # a proxy) echoing the request body gives it back both JSON-escaped and URL-encoded
    def echo(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, text=f"refused: {request.content.decode()}")

    instance = VendorInstance(
        name="porta",
        kind="portabilling",
        base_url="https://porta.test",
        auth={"login": "api-user", "token": SECRET},
    )
    porta = PortaBilling(instance, transport=httpx.MockTransport(echo))
    with pytest.raises(errors.VendorError) as caught:
        porta.apply("update_customer", 1001, {"bill_status": "O"})
    said = f"{caught.value} {caught.value.excerpt}"
    assert "e9Zq" not in said and "api-user" not in said, said
    assert MARK in said


def test_text_without_a_secret_is_unchanged():
    assert Redactor([SECRET, ""]).text("nothing to hide / here + there") == (
        "nothing to hide / here + there"
    )


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_both_log_formats_blank_a_secret(monkeypatch, fmt):
    # SWITCHBOARD_LOG_FORMAT=text used a plain formatter: the last guard was off
    monkeypatch.setenv("SWITCHBOARD_LOG_FORMAT", fmt)
    stream = io.StringIO()
    handler = configure_logging([SECRET], stream=stream)
    try:
        logging.getLogger("switchboard.test").warning("vendor said: bad token %s", SECRET)
    finally:
        logging.getLogger().removeHandler(handler)
    assert "vendor said: bad token" in stream.getvalue()
    assert "e9Zq" not in stream.getvalue() and MARK in stream.getvalue()
