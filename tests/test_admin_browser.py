"""The admin's operator flows in a real browser (Debian's chromium, Playwright,
1400 px wide) against a live gateway with a provider and a mapping."""

from __future__ import annotations

import time
from collections.abc import Iterator

import openai
import pytest
from playwright.sync_api import Browser, Page, expect

from .conftest import LiveServer, configure_routing, fake_upstream, routed_gateway, run_in_shell
from .test_dashboard_browser import PASSWORD, USER, make_admin

pytestmark = pytest.mark.e2e

WIDTH = 1400

SPEC = {
    "providers": [{"name": "cloud", "kind": "openai", "base_url": "http://127.0.0.1:9/v1",
                   "key": "sk-browser-cloud-0001", "max_retries": 0, "breaker_fail_max": 2,
                   "breaker_reset_timeout": 600.0}],
    "mappings": [{"pattern": "gpt-*", "chain": [{"provider": "cloud"}, {"local": "demo"}]}],
}  # fmt: skip


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with routed_gateway(tmp_path_factory.mktemp("admin-browser"), SPEC, demo=True) as server:
        make_admin(server)
        yield server


@pytest.fixture
def page(chromium: Browser, gateway: LiveServer) -> Iterator[Page]:
    context = chromium.new_context(viewport={"width": WIDTH, "height": 900})  # no cookies
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.goto(f"{gateway.url}/admin/login/?next=/admin/")
        page.fill("#id_username", USER)
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.wait_for_url(f"{gateway.url}/admin/")
        yield page
    finally:
        context.close()


_CHAIN = """
from routing.models import BackendMapping
targets = BackendMapping.objects.get(pattern="gpt-*").targets.all()
print("CHAIN=" + " | ".join(str(t) for t in targets))
"""


def chain(server: LiveServer) -> str:
    out = run_in_shell(server, _CHAIN, doing="reading the chain")
    return next(x for x in out.splitlines() if x.startswith("CHAIN=")).removeprefix("CHAIN=")


def test_reordering_a_chain_by_typing_a_position(gateway: LiveServer, page: Page) -> None:
    assert chain(gateway) == "cloud:<requested> | local:demo"
    page.goto(f"{gateway.url}/admin/routing/backendmapping/")
    page.click("text=gpt-*")
    page.fill("#id_targets-1-position", "0")  # the fallback becomes the primary; nothing else
    page.click("input[name=_save]")
    expect(page.locator(".messagelist")).to_contain_text("was changed successfully")
    expect(page.locator("#result_list")).to_contain_text("local:demo → cloud:<requested>")
    assert chain(gateway) == "local:demo | cloud:<requested>"


_KEY_NAMES = """
from gateway.keys.models import ApiKey
print("NAMES=" + ",".join(ApiKey.objects.order_by("name").values_list("name", flat=True)))
"""


def test_reloading_the_key_page_makes_no_second_key(gateway: LiveServer, page: Page) -> None:
    page.goto(f"{gateway.url}/admin/keys/apikey/add/")
    page.fill("#id_name", "browser-reload")
    page.click("input[name=_save]")
    page.wait_for_url("**/created/")
    secret = page.input_value("#api-key-secret")
    assert secret.startswith("gw-")
    page.reload()
    expect(page.locator("#api-key-secret")).to_have_value(secret)
    out = run_in_shell(gateway, _KEY_NAMES, doing="listing keys")
    names = next(x for x in out.splitlines() if x.startswith("NAMES=")).removeprefix("NAMES=")
    assert names.split(",").count("browser-reload") == 1


def test_testing_a_providers_connection_from_its_form(gateway: LiveServer, page: Page) -> None:
    key = "sk-browser-typed-5555"
    with fake_upstream(key) as upstream:
        page.goto(f"{gateway.url}/admin/routing/provider/")
        page.click("#result_list >> text=cloud")
        expect(page.locator(".field-api_key_status")).to_contain_text("key set, ends in …0001")
        page.fill("#id_base_url", f"{upstream.url}/v1")
        page.click("#test-connection")  # the stored key: refused by this upstream
        result = page.locator("#test-connection-result")
        expect(result).to_contain_text("the API key was refused")
        page.fill("#id_api_key_input", key)
        page.click("#test-connection")
        expect(result).to_contain_text("OK (HTTP 200")
        assert result.get_attribute("data-ok") == "yes"
    page.reload()  # nothing was saved
    expect(page.locator("#id_base_url")).to_have_value("http://127.0.0.1:9/v1")


def test_the_request_log_fits_1400_px(gateway: LiveServer, page: Page) -> None:
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="sk-any", max_retries=0)
    client.chat.completions.create(
        model="gpt-browser", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user",
                                                                         "content": "Hi"}])
    # Rows are written off the request path: reload until both are there.
    rows = page.locator("#result_list tbody tr")
    for _ in range(60):
        page.goto(f"{gateway.url}/admin/usage/requestlog/")
        if rows.filter(has_text="no-such-model").count() and rows.filter(
            has_text="gpt-browser"
        ).count():
            break
        page.wait_for_timeout(250)
    expect(rows.filter(has_text="gpt-browser")).to_have_count(1)
    for column in ("status_badge", "latency", "tokens", "ttft"):
        box = page.locator(f"#result_list th.column-{column}").bounding_box()
        assert box is not None and box["x"] + box["width"] <= WIDTH, column
    assert page.evaluate("() => document.documentElement.scrollWidth") <= WIDTH
    failed = rows.filter(has_text="no-such-model")
    expect(failed.locator(".status-client")).to_have_text("404")
    failed.locator("th a, td a").first.click()
    expect(page.locator(".field-error_message")).to_contain_text("no-such-model")


def test_the_playground_streams_an_answer_and_shows_the_route(
    gateway: LiveServer, page: Page
) -> None:
    page.goto(f"{gateway.url}/admin/")
    page.click("#gateway-monitoring >> text=Playground")
    page.fill("#pg-model", "demo")
    page.fill("#pg-max", "12")
    page.fill("#pg-prompt", "Say something")
    # Mark the answer box: it must fill in place, in pieces, not by a page load.
    page.evaluate("""() => { window.__pieces = 0; new MutationObserver(() => window.__pieces++)
        .observe(document.getElementById('answer'), {childList: true}); }""")
    page.click("#pg-send")
    expect(page.locator("#pg-backend")).to_have_text("local:demo")
    expect(page.locator("#pg-tokens")).to_contain_text(" out (")
    expect(page.locator("#pg-attempts")).to_contain_text("local:demo/demo=ok")
    assert page.locator("#answer").inner_text().strip()
    assert page.evaluate("() => window.__pieces") >= 1
    expect(page.locator("#answer-error")).to_have_text("")
    # A name that does not route: the gateway's own refusal, shown as such.
    page.fill("#pg-model", "no-such-model")
    page.click("#pg-send")
    expect(page.locator("#answer-error")).to_contain_text("404")


def test_the_dashboard_shows_the_last_hour_per_backend(gateway: LiveServer, page: Page) -> None:
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="sk-any", max_retries=0)
    client.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "Hi"}], max_tokens=2
    )
    page.goto(f"{gateway.url}/admin/dashboard/")
    row = page.locator('#history-backends tr[data-backend="local:demo"]')
    expect(row).to_have_count(1)  # the page's first message carries the hour
    requests = int(row.locator("td").nth(1).inner_text())
    assert requests >= 1
    expect(page.locator("#chart-rps polyline")).to_have_count(1)
    page.select_option("#history-backend", "local:demo")
    assert float(page.locator("#peak-rps").inner_text()) > 0


def test_the_route_tester_shows_an_open_breaker_and_resets_it(
    gateway: LiveServer, page: Page
) -> None:
    # A mapping of its own, the (unreachable) provider first: whatever other tests did.
    configure_routing(gateway, {"mappings": [
        {"pattern": "o1-*", "chain": [{"provider": "cloud"}, {"local": "demo"}]}]})  # fmt: skip
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="sk-any", max_retries=0)
    page.goto(f"{gateway.url}/admin/routing/backendmapping/route-tester/?model=o1-x")
    primary = page.locator("#route-chain tr.hop").first
    expect(primary.locator(".verdict")).not_to_contain_text("breaker open")
    for _ in range(3):  # each fails on the provider, then the local model answers
        client.chat.completions.create(
            model="o1-x", messages=[{"role": "user", "content": "Hi"}], max_tokens=2
        )
    # Outcomes are recorded just after each answer is written: reload until the
    # last one is in (found under load, with the suite run in parallel).
    deadline = time.monotonic() + 10
    page.reload()
    while "failed" not in primary.locator(".recent").inner_text():
        assert time.monotonic() < deadline, primary.locator(".recent").inner_text()
        time.sleep(0.1)
        page.reload()
    expect(primary.locator(".verdict")).to_contain_text("breaker open")
    for _ in range(40):  # the attempts reach the log off the request path
        if "failed" in primary.locator(".recent").inner_text():
            break
        page.wait_for_timeout(250)
        page.reload()
    expect(primary.locator(".recent")).to_contain_text("failed")
    expect(primary.locator(".probe")).to_contain_text("probe failed")
    while primary.locator("input.reset-breaker").count():
        primary.locator("input.reset-breaker").first.click()
        expect(page.locator(".messagelist")).to_contain_text("reset (it was open)")
    expect(primary.locator(".verdict")).not_to_contain_text("breaker open")
    expect(primary.locator(".breakers")).not_to_contain_text("open")
