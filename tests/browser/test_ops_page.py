"""The ops web page in headless Chromium (Debian's ``chromium``) through Playwright.

A real HTTP server (werkzeug, threaded) serves the app; a real worker applies replays.
Skipped when Playwright or /usr/bin/chromium is missing. ``SWITCHBOARD_SCREENSHOTS=docs``
writes the screenshots referenced by the README into ``docs/``.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT, wait_for
from tests.ops.support import dead_letter_via_pipeline, synthetic_dead_letter

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium not installed"),
]
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def server(app):
    from werkzeug.serving import make_server

    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield context.new_page()
    context.close()


def shot_path(name: str, tmp_path: Path) -> Path:
    if os.environ.get("SWITCHBOARD_SCREENSHOTS") == "docs":
        return ROOT / "docs" / name
    return tmp_path / name


def login(page, server: str, token: str = "test-ops-token") -> None:
    page.goto(f"{server}/ops/")
    page.get_by_label("Ops token").fill(token)
    page.get_by_label("Ops token").press("Enter")  # keyboard only


def test_wrong_token_is_refused(page, server):
    page.goto(f"{server}/ops/")
    assert "/ops/login" in page.url
    page.get_by_label("Ops token").fill("not-the-token")
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_role("alert").inner_text() == "That token is not valid."
    assert "/ops/login" in page.url
    page.goto(f"{server}/ops/")
    assert "/ops/login" in page.url  # still signed out
    assert page.get_by_role("heading", name="Sign in").is_visible()


def test_a_form_without_its_csrf_token_is_refused(page, server):
    login(page, server)
    # the browser's own cookies, a forged form: (the page's CSP even forbids fetch())
    response = page.request.post(f"{server}/ops/logout", form={"csrf_token": "forged"})
    status = response.status
    assert status == 400
    ok = page.request.post(f"{server}/ops/logout", form={"csrf_token": "forged"}, max_redirects=0)
    assert ok.status == 400
    page.goto(f"{server}/ops/")
    assert "/ops/login" not in page.url  # still signed in: the forged logout did nothing


def test_log_in_filter_open_replay_and_see_it_gone(
    page, server, client, worker, sandbox, redis, tmp_path
):
    sandbox.knobs("perfexcrm", fail_next=100, fail_status=500)
    entry_id = dead_letter_via_pipeline(client, redis, "evt_page_replay")
    now = time.time()
    synthetic_dead_letter(redis, 1, now - 300, vendor="porta", code="exhausted", rule="billing")
    synthetic_dead_letter(redis, 2, now - 200, vendor="halo", code="auth_failed", rule="tickets")
    synthetic_dead_letter(redis, 3, now - 100)

    login(page, server)
    assert page.get_by_role("heading", name="Dead letters", exact=True).is_visible()
    assert page.get_by_role("heading", name="4 in the store").is_visible()
    page.screenshot(path=str(shot_path("ops-dead-letters.png", tmp_path)), full_page=True)

    page.get_by_label("Vendor", exact=True).fill("perfex")
    page.get_by_label("Code", exact=True).fill("exhausted")
    page.get_by_role("button", name="Apply filter").click()
    rows = page.locator("table.entries tbody tr")
    assert rows.count() == 1
    assert rows.first.get_attribute("data-id") == entry_id

    page.get_by_role("link", name=f"Open entry {entry_id}").click()
    assert page.get_by_role("heading", name=f"Dead letter {entry_id}").is_visible()
    attempts = page.locator("section", has=page.get_by_role("heading", name="Attempts (3)"))
    assert attempts.locator("tbody tr").count() == 3
    assert "Injected failure" in attempts.inner_text()
    page.screenshot(path=str(shot_path("ops-dead-letter-entry.png", tmp_path)), full_page=True)

    sandbox.knobs("perfexcrm", fail_next=0)  # the vendor is fixed
    page.get_by_role("button", name="Replay").click()
    assert "Replay queued" in page.get_by_role("status").inner_text()

    wait_for(lambda: sandbox.record("perfexcrm", 7)["vat"] == "paid 49.0")

    def gone() -> bool:
        page.goto(f"{server}/ops/?vendor=perfex&code=exhausted")
        return page.locator(f'tr[data-id="{entry_id}"]').count() == 0

    wait_for(gone, timeout=20, interval=0.3)
    assert page.get_by_text("No dead letters match this filter.").is_visible()
    page.get_by_role("link", name="Audit log").click()
    assert "replay" in page.locator("tbody").inner_text()


def test_discard_and_event_lookup(page, server, client, worker, sandbox, redis):
    entry_id = dead_letter_via_pipeline(client, redis, "evt_page_lookup", customer="999")
    login(page, server)
    page.get_by_label("Source", exact=True).first.fill("stripe")
    page.get_by_label("Event id").fill("evt_page_lookup")
    page.get_by_role("button", name="Show event").click()
    assert page.get_by_role("heading", name="Event stripe/evt_page_lookup").is_visible()
    assert page.locator(".state-dead").count() == 1
    page.get_by_role("link", name=entry_id[:10] + "…").click()
    page.get_by_role("button", name="Discard").click()
    assert "Discarded" in page.get_by_role("status").inner_text()
    assert page.locator(f'tr[data-id="{entry_id}"]').count() == 0
