"""The live dashboard in a real browser: Debian's chromium, driven by Playwright.

Logs into the admin of a live daphne gateway, opens the dashboard from the
admin index, sends API requests from outside the browser and waits for them to
appear on the page, which must not have reloaded meanwhile.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from playwright.sync_api import Browser, Page, expect

from .conftest import (  # noqa: F401  (CHROMIUM, CHROMIUM_ARGS: test_admin_browser's too)
    CHROMIUM,
    CHROMIUM_ARGS,
    LiveServer,
    create_admin,
    redis_server,
    server_env,
    start_together,
)

USER, PASSWORD = "dash-admin", "dash-Pa55word-7731"

pytestmark = pytest.mark.e2e


def make_admin(server: LiveServer) -> str:
    """A staff login, made as the README says: Django's createsuperuser, scripted
    (the same user and password every time: one already there is kept)."""
    create_admin(server, USER, PASSWORD, exist_ok=True)
    return USER


@pytest.fixture(scope="module")
def admin_user(live_gateway: LiveServer) -> str:
    return make_admin(live_gateway)


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    context = chromium.new_context()  # a fresh one: no cookies, no cache
    try:
        yield context.new_page()
    finally:
        context.close()


def open_dashboard(page: Page, base: str, user: str) -> None:
    """Log in, and follow the admin index's link to the dashboard."""
    page.set_default_timeout(15_000)
    page.goto(f"{base}/admin/login/?next=/admin/")
    page.fill("#id_username", user)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{base}/admin/")
    page.click("#gateway-monitoring >> text=Live dashboard")
    page.wait_for_url(f"{base}/admin/dashboard/")
    expect(page.locator("#connection")).to_have_text("live")


def test_dashboard_shows_requests_without_reloading(
    live_gateway: LiveServer, admin_user: str, page: Page, tmp_path: Path
) -> None:
    base = live_gateway.url
    open_dashboard(page, base, admin_user)

    # Mark this document and the rows it already shows: what comes next is new.
    page.evaluate(
        """() => { window.__sameDocument = true;
        document.querySelectorAll('#requests tbody tr').forEach(r => r.dataset.old = '1'); }"""
    )
    client = openai.OpenAI(
        base_url=f"{base}/v1", api_key="sk-browser-test", max_retries=0, timeout=60
    )
    answer = client.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "Hello, dashboard"}], max_tokens=7
    )
    assert answer.usage is not None
    unknown = f"no-such-model-{uuid.uuid4().hex[:8]}"
    missing = httpx.post(
        f"{base}/v1/chat/completions",
        json={"model": unknown, "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": "Bearer sk-browser-test"},
        timeout=30,
    )
    assert missing.status_code == 404

    new_rows = page.locator("#requests tbody tr:not([data-old])")
    served = new_rows.filter(has_text="local:demo")
    expect(served).to_have_count(1)
    cells = served.locator("td")
    expect(cells.nth(1)).to_have_text("openai")
    expect(cells.nth(2)).to_have_text("demo")
    expect(cells.nth(4)).to_have_text("200")
    tokens = f"{answer.usage.prompt_tokens} / {answer.usage.completion_tokens}"
    expect(cells.nth(5)).to_have_text(tokens)
    expect(cells.nth(6)).to_contain_text("ms")
    failed = new_rows.filter(has_text=unknown)
    expect(failed).to_have_count(1)
    expect(failed.locator("td").nth(4)).to_contain_text("404")

    # The 1 s stats: throughput moved, and the local backend is listed as healthy.
    expect(page.locator("#rps")).not_to_have_text("0.00")
    backend = page.locator('#backends tr[data-backend="local:demo"]')
    expect(backend).to_contain_text("closed")
    expect(backend).to_contain_text("healthy")

    assert page.evaluate("() => window.__sameDocument === true")
    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


@pytest.fixture
def shared_pair(tmp_path: Path) -> Iterator[tuple[LiveServer, LiveServer]]:
    """Two gateway processes on one database and one Redis (the channel layer)."""
    data = tmp_path / "gateway"
    data.mkdir()
    with redis_server(data) as redis_url:
        env = server_env(data, REDIS_URL=redis_url)
        first, second = LiveServer(data_dir=data, env=env), LiveServer(data_dir=data, env=env)
        try:
            first.prepare(demo=True)
            make_admin(first)
            start_together(first, second)
            yield first, second
        finally:
            first.stop()
            second.stop()


def test_one_dashboard_sees_every_process_through_redis(
    shared_pair: tuple[LiveServer, LiveServer], page: Page
) -> None:
    watched, other = shared_pair
    open_dashboard(page, watched.url, USER)
    page.evaluate("() => { window.__sameDocument = true; }")
    unknown = f"via-other-process-{uuid.uuid4().hex[:8]}"
    response = httpx.post(
        f"{other.url}/v1/chat/completions",
        json={"model": unknown, "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": "Bearer sk-browser-test"},
        timeout=30,
    )
    assert response.status_code == 404
    expect(page.locator("#requests tbody tr", has_text=unknown)).to_have_count(1)
    # The other process ticks too, once it has served a request: both are summed.
    expect(page.locator("#sources")).to_have_text("2")
    assert page.evaluate("() => window.__sameDocument === true")
