"""The routing admin through Django's test client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from routing.models import BackendMapping, CloudCredential, LocalModel, MappingTarget, Provider

KEY = "sk-admin-secret-9876"

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
        "/admin/routing/cloudcredential/",
        f"/admin/routing/cloudcredential/{credential.pk}/change/",
    ]
    for page in pages:
        body = admin_client.get(page).content.decode()
        assert KEY not in body, page
        assert credential.api_key.token not in body, page
    assert "…9876" in admin_client.get("/admin/routing/provider/").content.decode()


def test_saving_without_a_new_key_keeps_the_old_one(
    admin_client: Client, provider: Provider
) -> None:
    page = admin_client.get(f"/admin/routing/provider/{provider.pk}/change/")
    form = page.context["adminform"].form
    data = {k: v for k, v in form.initial.items() if v is not None and k != "api_key_input"}
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
    BackendMapping.objects.create(pattern="*", priority=0)  # matches, but outranked
    body = admin_client.get(
        "/admin/routing/backendmapping/route-tester/?model=gpt-4o"
    ).content.decode()
    assert "Matched mapping <strong>gpt-*</strong>" in body
    assert "provider openai" in body and "local model demo" in body
    assert "unhealthy" in body  # the provider's URL is a closed port
    assert "ready to load" in body or "resident" in body
    body = admin_client.get(
        "/admin/routing/backendmapping/route-tester/?model=nothing"
    ).content.decode()
    assert "No route" in body


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
