"""The routing admin through Django's test client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from routing.models import BackendMapping, CloudCredential, LocalModel, MappingTarget, Provider

from .conftest import fake_upstream

KEY = "sk-admin-secret-9876"
SECRET_FIELDS = {"api_key_input", "pending_api_key", "clear_api_key"}

pytestmark = pytest.mark.django_db


@pytest.fixture
def demo(demo_model_path: Path) -> LocalModel:
    return LocalModel.objects.create(name="demo", path=str(demo_model_path))


@pytest.fixture
def provider(admin_client: Client) -> Provider:
    response = admin_client.post(
        "/admin/routing/provider/add/",
        {
            "name": "openai",
            "kind": "openai",
            "base_url": "http://127.0.0.1:9/v1",
            "api_key_input": KEY,
            "enabled": "on",
            "extra_headers": "{}",
            "connect_timeout": 1,
            "first_byte_timeout": 5,
            "first_token_timeout": 10,
            "stream_idle_timeout": 5,
            "total_timeout": 30,
            "max_retries": 1,
            "retry_backoff": 0.1,
            "retry_after_cap": 5,
            "breaker_fail_max": 3,
            "breaker_reset_timeout": 5,
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    return Provider.objects.get(name="openai")


def mapping_form(pattern: str, targets: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "pattern": pattern,
        "priority": fields.get("priority", 0),
        "balance": fields.get("balance", "least-in-flight"),
        "description": "",
        "targets-TOTAL_FORMS": len(targets),
        "targets-INITIAL_FORMS": 0,
        "targets-MIN_NUM_FORMS": 0,
        "targets-MAX_NUM_FORMS": 1000,
    }
    if fields.get("enabled", True):
        data["enabled"] = "on"
    for i, target in enumerate(targets):
        for key, value in target.items():
            data[f"targets-{i}-{key}"] = value
    return data


def test_provider_key_is_write_only(admin_client: Client, provider: Provider) -> None:
    credential = CloudCredential.objects.get(provider=provider)
    assert credential.reveal() == KEY
    pages = [
        "/admin/routing/provider/",
        f"/admin/routing/provider/{provider.pk}/change/",
    ]
    for page in pages:
        body = admin_client.get(page).content.decode()
        assert KEY not in body, page
        assert credential.api_key.token not in body, page
    assert "…9876" in admin_client.get("/admin/routing/provider/").content.decode()
    change = admin_client.get(f"/admin/routing/provider/{provider.pk}/change/").content.decode()
    assert "key set, ends in …9876" in change
    # The key has one place, the provider form: no credentials page of its own.
    assert admin_client.get("/admin/routing/cloudcredential/").status_code == 404


def _change_form_data(admin_client: Client, provider: Provider) -> dict[str, object]:
    """The provider's change form as the browser would post it back, key field left empty."""
    page = admin_client.get(f"/admin/routing/provider/{provider.pk}/change/")
    form = page.context["adminform"].form
    return {k: v for k, v in form.initial.items() if v is not None and k not in SECRET_FIELDS}


def test_saving_without_a_new_key_keeps_the_old_one(
    admin_client: Client, provider: Provider
) -> None:
    data = _change_form_data(admin_client, provider)
    data.update(enabled="on", extra_headers="{}", description="edited")
    response = admin_client.post(f"/admin/routing/provider/{provider.pk}/change/", data)
    assert response.status_code == 302
    assert CloudCredential.objects.get(provider=provider).reveal() == KEY


def test_mapping_with_inline_chain(
    admin_client: Client, provider: Provider, demo: LocalModel
) -> None:
    data = mapping_form(
        "gpt-*",
        [
            {"position": 0, "provider": provider.pk, "upstream_model": "gpt-4o-mini"},
            {"position": 1, "local_model": demo.pk},
        ],
        priority=3,
    )
    response = admin_client.post("/admin/routing/backendmapping/add/", data)
    assert response.status_code == 302, response.content.decode()[:3000]
    mapping = BackendMapping.objects.get(pattern="gpt-*")
    assert [str(t) for t in mapping.targets.all()] == ["openai:gpt-4o-mini", "local:demo"]
    listing = admin_client.get("/admin/routing/backendmapping/").content.decode()
    assert "openai:gpt-4o-mini → local:demo" in listing


@pytest.mark.parametrize(
    ("pattern", "targets", "expected"),
    [
        ("x-*", [], "at least one target"),
        ("bad [pattern", "provider", "whitespace"),
        ("bad[", "provider", "Unbalanced"),
        ("gpt-[4o", "provider", "Unbalanced"),
        ("x-*", "both", "either a local model or a provider"),
        ("x-*", "disabled", "is disabled"),
        ("x-*", "missing", "is missing"),
    ],
)
def test_mapping_validation_errors(
    admin_client: Client, provider: Provider, demo: LocalModel, tmp_path: Path,
    pattern: str, targets: Any, expected: str,
) -> None:  # fmt: skip
    if targets == "provider":
        rows = [{"position": 0, "provider": provider.pk}]
    elif targets == "both":
        rows = [{"position": 0, "provider": provider.pk, "local_model": demo.pk}]
    elif targets == "disabled":
        Provider.objects.filter(pk=provider.pk).update(enabled=False)
        rows = [{"position": 0, "provider": provider.pk}]
    elif targets == "missing":
        ghost = LocalModel.objects.create(name="ghost", path=str(tmp_path / "nothing"))
        rows = [{"position": 0, "local_model": ghost.pk}]
    else:
        rows = targets
    response = admin_client.post("/admin/routing/backendmapping/add/", mapping_form(pattern, rows))
    assert response.status_code == 200
    assert expected in response.content.decode()
    assert not BackendMapping.objects.exists()


def test_route_tester(admin_client: Client, provider: Provider, demo: LocalModel, settings) -> None:
    settings.ENABLE_CLOUD_ROUTING = True
    mapping = BackendMapping.objects.create(pattern="gpt-*", priority=1)
    MappingTarget.objects.create(mapping=mapping, provider=provider, position=0)
    MappingTarget.objects.create(mapping=mapping, local_model=demo, position=1)
    BackendMapping.objects.create(pattern="gpt-4o", priority=5)  # no target: skipped
    other = BackendMapping.objects.create(pattern="g*", priority=0)  # outranked
    MappingTarget.objects.create(mapping=other, local_model=demo, position=0)
    tester = "/admin/routing/backendmapping/route-tester/?model="
    body = admin_client.get(tester + "gpt-4o").content.decode()
    assert "Matched mapping <strong>gpt-*</strong>" in body
    assert "provider openai" in body and "local model demo" in body
    assert "unhealthy" in body  # the provider's URL is a closed port
    assert "on disk" in body or "loaded" in body
    verdicts = body[body.index('id="route-verdicts"') :]
    assert "<strong>gpt-4o</strong> (priority 5):\n        skipped" in verdicts
    assert "its chain is empty" in verdicts
    assert "<strong>gpt-*</strong> (priority 1):\n        used" in verdicts
    assert "<strong>g*</strong> (priority 0):\n        outranked" in verdicts
    assert "lower priority (0 &lt; 1)" in verdicts
    assert "outranks &#x27;gpt-4o&#x27;" not in body  # a skipped mapping is not "outranked"
    assert "No route" in admin_client.get(tester + "nothing").content.decode()
    settings.ENABLE_CLOUD_ROUTING = False
    off = admin_client.get(tester + "gpt-4o").content.decode()
    assert "Cloud routing is off" in off and "ignored" in off


def test_mode_banner(admin_client: Client, settings) -> None:
    settings.ENABLE_CLOUD_ROUTING = False
    assert "Cloud routing: OFF" in admin_client.get("/admin/").content.decode()
    settings.ENABLE_CLOUD_ROUTING = True
    assert "Cloud routing: ON" in admin_client.get("/admin/").content.decode()


def test_test_connection_reports_failure(admin_client: Client, provider: Provider) -> None:
    response = admin_client.post(
        "/admin/routing/provider/",
        {"action": "test_connection", "_selected_action": [provider.pk]},
        follow=True,
    )
    messages = [str(m) for m in response.context["messages"] if "openai:" in str(m)]
    assert len(messages) == 1
    assert messages[0].startswith("openai: FAILED (no response")
    assert "ConnectError" in messages[0]
    assert KEY not in response.content.decode()


def test_editing_a_mapping_reorders_its_chain(
    admin_client: Client, provider: Provider, demo: LocalModel
) -> None:
    mapping = BackendMapping.objects.create(pattern="gpt-*")
    first = MappingTarget.objects.create(mapping=mapping, provider=provider, position=0)
    second = MappingTarget.objects.create(mapping=mapping, local_model=demo, position=1)
    url = f"/admin/routing/backendmapping/{mapping.pk}/change/"
    data = mapping_form("gpt-*", [
        {"id": first.pk, "position": 1, "provider": provider.pk},
        {"id": second.pk, "position": 0, "local_model": demo.pk},  # moved to the front
        {"position": "", "provider": provider.pk, "upstream_model": "gpt-4o-mini"},  # appended
    ])  # fmt: skip
    data["targets-INITIAL_FORMS"] = 2
    data["targets-0-mapping"] = data["targets-1-mapping"] = mapping.pk
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:3000]
    chain = [(t.position, str(t)) for t in mapping.targets.all()]
    assert chain == [(0, "local:demo"), (1, "openai:<requested>"), (2, "openai:gpt-4o-mini")]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ('["x", 1]', "must be an object"),
        ('{"Authorization": "Bearer sk-123"}', "carries a secret"),
        ('{"api-key": "sk-123"}', "carries a secret"),
        ('{"bad name": "x"}', "not a valid header name"),
        ('{"X-Ok": 5}', "one-line string"),
    ],
)
def test_extra_headers_are_checked(
    admin_client: Client, provider: Provider, headers: str, expected: str
) -> None:
    data = _change_form_data(admin_client, provider)
    data.update(enabled="on", extra_headers=headers)
    response = admin_client.post(f"/admin/routing/provider/{provider.pk}/change/", data)
    assert response.status_code == 200 and expected in response.content.decode()
    assert Provider.objects.get(pk=provider.pk).extra_headers == {}


def test_test_connection_against_the_fake_upstream(admin_client: Client) -> None:
    with fake_upstream(KEY) as upstream:
        provider = Provider.objects.create(
            name="fake", kind="openai", base_url=f"{upstream.url}/v1"
        )
        credential = CloudCredential(provider=provider)
        credential.set_key(KEY)
        credential.save()
        response = admin_client.post(
            "/admin/routing/provider/",
            {"action": "test_connection", "_selected_action": [provider.pk]},
            follow=True,
        )
        [message] = [str(m) for m in response.context["messages"] if "fake:" in str(m)]
        assert message.startswith("fake: OK (HTTP 200, ")
        [seen] = upstream.find(path="/v1/models")
        assert seen.headers["authorization"] == f"Bearer {KEY}"  # a real call, the real key


def test_a_short_key_shows_no_suffix(admin_client: Client, provider: Provider) -> None:
    credential = CloudCredential.objects.get(provider=provider)
    credential.set_key("sk-short")
    credential.save()
    listing = admin_client.get("/admin/routing/provider/").content.decode()
    assert "hort" not in listing and ">key set<" in listing


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("http://vllm:8000/v1", True),  # a Docker or Kubernetes service name
        ("https://api.example.com/v1", True),
        ("http://[::1]:8000/v1", True),
        ("ftp://files.example.com", False),
        ("https://user:sk-secret@api.example.com/v1", False),  # a secret in plain text
        ("http://bad host/v1", False),
        ("https://api.example.com/v1?key=sk-1", False),
    ],
)
def test_base_urls(url: str, ok: bool) -> None:
    from django.core.exceptions import ValidationError

    provider = Provider(name="p", kind="openai", base_url=url)
    if ok:
        provider.full_clean()
    else:
        with pytest.raises(ValidationError, match="base_url"):
            provider.full_clean()


def test_a_service_name_as_base_url_and_a_one_line_key(
    admin_client: Client, provider: Provider
) -> None:
    data = _change_form_data(admin_client, provider)
    data.update(enabled="on", extra_headers="{}", base_url="http://vllm:8000/v1")
    response = admin_client.post(f"/admin/routing/provider/{provider.pk}/change/", data)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Provider.objects.get(pk=provider.pk).base_url == "http://vllm:8000/v1"
    data["api_key_input"] = "sk-one\nsk-two"
    response = admin_client.post(f"/admin/routing/provider/{provider.pk}/change/", data)
    assert response.status_code == 200 and "one line" in response.content.decode()
