"""The admin as an operator's console, through Django's test client: chain
editing, validation with plain messages, local model state, labels."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from gateway.keys import admin as admin_keys
from gateway.keys.models import ApiKey
from gateway.keys.services import create_api_key
from gateway.usage.models import RequestLog
from inference.local.chunks import EngineStats
from routing import local_state
from routing.models import (
    BackendMapping,
    CloudCredential,
    LocalModel,
    MappingTarget,
    Provider,
)

from .conftest import fake_upstream
from .test_admin import KEY, _change_form_data, demo, mapping_form, provider  # noqa: F401
from .test_keys_units import SECRET

pytestmark = pytest.mark.django_db

NEW_KEY = "sk-replacement-key-4321"


def chain_edit(mapping: BackendMapping, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The change form as a browser posts it: every existing row, as shown, with edits."""
    data = mapping_form(mapping.pattern, rows)
    data["targets-INITIAL_FORMS"] = sum(1 for r in rows if "id" in r)
    for i, row in enumerate(rows):
        if "id" in row:
            data[f"targets-{i}-mapping"] = mapping.pk
    return data


def test_typing_a_position_in_one_row_reorders_the_chain(
    admin_client: Client, provider: Provider, demo: LocalModel  # noqa: F811
) -> None:
    mapping = BackendMapping.objects.create(pattern="gpt-*")
    first = MappingTarget.objects.create(mapping=mapping, provider=provider, position=0)
    second = MappingTarget.objects.create(mapping=mapping, local_model=demo, position=1)
    # Only the fallback's position is typed; the old primary's row is left as it was.
    data = chain_edit(mapping, [
        {"id": first.pk, "position": 0, "provider": provider.pk, "upstream_model": ""},
        {"id": second.pk, "position": 0, "local_model": demo.pk, "upstream_model": ""},
    ])  # fmt: skip
    response = admin_client.post(f"/admin/routing/backendmapping/{mapping.pk}/change/", data)
    assert response.status_code == 302, response.content.decode()[:3000]
    chain = [(t.position, str(t)) for t in mapping.targets.all()]
    assert chain == [(0, "local:demo"), (1, "openai:<requested>")]


def test_the_same_target_twice_is_refused(
    admin_client: Client, provider: Provider, demo: LocalModel  # noqa: F811
) -> None:
    rows = [
        {"position": 0, "provider": provider.pk, "upstream_model": "gpt-4o"},
        {"position": 1, "local_model": demo.pk},
        {"position": 2, "provider": provider.pk, "upstream_model": "gpt-4o"},
    ]
    response = admin_client.post("/admin/routing/backendmapping/add/", mapping_form("x-*", rows))
    assert response.status_code == 200
    assert "openai:gpt-4o is already in this chain" in response.content.decode()
    assert not BackendMapping.objects.exists()
    # Another upstream model of the same provider is another target.
    rows[2]["upstream_model"] = "gpt-4o-mini"
    response = admin_client.post("/admin/routing/backendmapping/add/", mapping_form("x-*", rows))
    assert response.status_code == 302


def test_a_local_model_and_a_provider_in_one_row_is_a_plain_form_error(
    admin_client: Client, provider: Provider, demo: LocalModel  # noqa: F811
) -> None:
    rows = [{"position": 0, "provider": provider.pk, "local_model": demo.pk}]
    response = admin_client.post("/admin/routing/backendmapping/add/", mapping_form("x-*", rows))
    body = response.content.decode()
    assert response.status_code == 200 and "not both" in body
    assert "Constraint" not in body and "target_is_local_xor_provider" not in body
    rows = [{"position": 0, "upstream_model": "gpt-4o"}]  # neither
    body = admin_client.post(
        "/admin/routing/backendmapping/add/", mapping_form("x-*", rows)
    ).content.decode()
    assert "Choose either a local model or a provider." in body and "Constraint" not in body


def local_model_form(name: str, path: str, enabled: bool = True) -> dict[str, Any]:
    data = {"name": name, "path": path, "description": "", "input_price": "0", "output_price": "0"}
    return data | ({"enabled": "on"} if enabled else {})


def test_a_local_models_folder_is_checked_on_save(
    admin_client: Client, tmp_path: Path, demo_model_path: Path
) -> None:
    missing = tmp_path / "nothing-here"
    add = "/admin/routing/localmodel/add/"
    response = admin_client.post(add, local_model_form("x", str(missing)))
    assert response.status_code == 200
    assert f"No model at {missing}" in response.content.decode()
    assert not LocalModel.objects.exists()
    # Saved disabled, it may wait for its files; enabling it from the list is checked too.
    response = admin_client.post(
        "/admin/routing/localmodel/add/", local_model_form("x", str(missing), enabled=False)
    )
    assert response.status_code == 302
    model = LocalModel.objects.get(name="x")
    listing = admin_client.post("/admin/routing/localmodel/", {
        "form-TOTAL_FORMS": 1, "form-INITIAL_FORMS": 1, "form-0-id": model.pk,
        "form-0-enabled": "on", "_save": "Save",
    })  # fmt: skip
    assert listing.status_code == 200 and "No model at" in listing.content.decode()
    assert not LocalModel.objects.get(pk=model.pk).enabled
    ok = admin_client.post(
        "/admin/routing/localmodel/add/", local_model_form("demo", str(demo_model_path))
    )
    assert ok.status_code == 302
    page = admin_client.get("/admin/routing/localmodel/").content.decode()
    assert "folder missing" in page and "on disk" in page


class _Engine:
    def __init__(self, stats: EngineStats) -> None:
        self._stats = stats

    def stats(self) -> EngineStats:
        return self._stats


def test_local_state_reads_the_engine(
    monkeypatch: pytest.MonkeyPatch, demo_model_path: Path
) -> None:
    model = LocalModel(name="demo", path=str(demo_model_path))
    stats = EngineStats([], [], 0, 0, 0, 0, 0, failed_models={"demo": "bad weights"})
    monkeypatch.setattr(local_state, "get_engine", lambda: _Engine(stats))
    assert local_state.local_state(model) == local_state.LocalState("failed: bad weights", True)
    stats.failed_models.clear()
    stats.resident_models.append("demo")
    assert local_state.local_state(model).label == "loaded"


def test_an_expiry_in_the_past_is_refused(admin_client: Client) -> None:
    past = timezone.localtime() - timedelta(days=1)
    data = {
        "name": "late", "enabled": "on", "models_text": "",
        "expires_at_0": past.strftime("%Y-%m-%d"), "expires_at_1": past.strftime("%H:%M:%S"),
    }  # fmt: skip
    response = admin_client.post("/admin/keys/apikey/add/", data)
    assert response.status_code == 200 and "This time has passed" in response.content.decode()
    assert not ApiKey.objects.exists()
    # A key that has expired since can still be edited (its expiry left as it is).
    key, _ = create_api_key("old", expires_at=timezone.now() - timedelta(hours=1))
    page = admin_client.get(f"/admin/keys/apikey/{key.pk}/change/")
    form = page.context["adminform"].form
    data = {
        "name": "old-renamed", "enabled": "on", "models_text": "",
        "expires_at_0": form["expires_at"].value().strftime("%Y-%m-%d"),
        "expires_at_1": form["expires_at"].value().strftime("%H:%M:%S.%f"),
    }  # fmt: skip
    response = admin_client.post(f"/admin/keys/apikey/{key.pk}/change/", data)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert ApiKey.objects.get(pk=key.pk).name == "old-renamed"


def test_a_blocked_delete_names_the_mappings(
    admin_client: Client, provider: Provider, demo: LocalModel  # noqa: F811
) -> None:
    for pattern in ("gpt-*", "o1-*"):
        mapping = BackendMapping.objects.create(pattern=pattern)
        MappingTarget.objects.create(mapping=mapping, provider=provider, position=0)
        MappingTarget.objects.create(mapping=mapping, local_model=demo, position=1)
    page = admin_client.get(f"/admin/routing/provider/{provider.pk}/delete/").content.decode()
    assert "gpt-*</a>: primary 0 (openai:&lt;requested&gt;)" in page
    assert "o1-*</a>: primary 0" in page
    assert "/admin/routing/backendmapping/" in page
    page = admin_client.get(f"/admin/routing/localmodel/{demo.pk}/delete/").content.decode()
    assert "gpt-*</a>: fallback 1 (local:demo)" in page


def test_labels(admin_client: Client) -> None:
    key, _ = create_api_key("labels")
    RequestLog.objects.create(created_at=timezone.now(), api_key=key, protocol="openai",
                              endpoint="chat.completions", status=200, latency_ms=1.0)  # fmt: skip
    page = admin_client.get("/admin/usage/requestlog/").content.decode()
    assert "1 request log entry" in page
    assert "Api key" not in page and "Latency ms" not in page
    assert "View site" not in admin_client.get("/admin/").content.decode()


def test_the_key_page_is_a_get_that_reloads_without_a_new_key(
    admin_client: Client, monkeypatch: pytest.MonkeyPatch, django_user_model: Any
) -> None:
    now = [1_900_000_000.0]
    monkeypatch.setattr(admin_keys, "clock", lambda: now[0])
    created = admin_client.post("/admin/keys/apikey/add/", {"name": "ci", "enabled": "on"})
    assert created.status_code == 302
    pages = [admin_client.get(created["Location"]).content.decode() for _ in range(3)]
    secrets = {SECRET.search(page).group(0) for page in pages}  # type: ignore[union-attr]
    assert len(secrets) == 1 and ApiKey.objects.count() == 1
    # Another admin's session never held it.
    other = Client()
    other.force_login(django_user_model.objects.create_superuser("other", password="x"))
    assert 'id="api-key-gone"' in other.get(created["Location"]).content.decode()
    # Past its time it is gone, from the page and from the session.
    now[0] += admin_keys.SHOW_SECONDS + 1
    page = admin_client.get(created["Location"]).content.decode()
    assert 'id="api-key-gone"' in page and secrets.pop() not in page
    assert admin_client.session[admin_keys._SESSION_KEY] == {}


def test_key_names_are_unique(admin_client: Client) -> None:
    create_api_key("ci")
    response = admin_client.post("/admin/keys/apikey/add/", {"name": "ci", "enabled": "on"})
    assert response.status_code == 200
    assert "API key with this Name already exists" in response.content.decode()
    assert ApiKey.objects.count() == 1


def provider_change(admin_client: Client, target: Provider, **changes: Any) -> Any:
    """The provider's change form as the browser posts it back, with changes."""
    data = _change_form_data(admin_client, target)
    data.update({"enabled": "on", "extra_headers": "{}", **changes})
    return admin_client.post(f"/admin/routing/provider/{target.pk}/change/", data)


def stored_key(target: Provider) -> str | None:
    credential = CloudCredential.objects.filter(provider=target).first()
    return credential.reveal() if credential else None


def test_a_providers_key_is_set_replaced_and_cleared_on_its_form(
    admin_client: Client, provider: Provider  # noqa: F811
) -> None:
    assert provider_change(admin_client, provider, api_key_input=NEW_KEY).status_code == 302
    assert stored_key(provider) == NEW_KEY
    page = admin_client.get(f"/admin/routing/provider/{provider.pk}/change/").content.decode()
    assert "key set, ends in …4321" in page and NEW_KEY not in page
    both = provider_change(admin_client, provider, api_key_input="sk-x" * 5, clear_api_key="on")
    assert both.status_code == 200 and "not both" in both.content.decode()
    assert provider_change(admin_client, provider, clear_api_key="on").status_code == 302
    assert stored_key(provider) is None
    assert ">no key<" in admin_client.get("/admin/routing/provider/").content.decode()


def test_a_typed_key_survives_a_validation_error(
    admin_client: Client, provider: Provider  # noqa: F811
) -> None:
    failed = provider_change(
        admin_client, provider, api_key_input=NEW_KEY, extra_headers='{"bad name": "x"}'
    )
    page = failed.content.decode()
    assert failed.status_code == 200 and "not a valid header name" in page
    assert NEW_KEY not in page and "is kept" in page and "…4321" in page
    token = failed.context["adminform"].form.data["pending_api_key"]
    assert token and NEW_KEY not in token
    assert stored_key(provider) == KEY  # nothing saved yet
    # Corrected and sent again, key field empty as the browser leaves it: the typed key is set.
    assert provider_change(admin_client, provider, pending_api_key=token).status_code == 302
    assert stored_key(provider) == NEW_KEY


def test_connection_is_tested_from_the_form_before_saving(
    admin_client: Client, provider: Provider  # noqa: F811
) -> None:
    url = f"/admin/routing/provider/test-connection/?id={provider.pk}"
    with fake_upstream(NEW_KEY) as upstream:
        data = _change_form_data(admin_client, provider)
        data.update(enabled="on", extra_headers="{}", base_url=f"{upstream.url}/v1")
        refused = admin_client.post(url, data).json()  # the stored key: not this upstream's
        assert refused == {"ok": False, "message": refused["message"]}
        assert "the API key was refused" in refused["message"]
        tested = admin_client.post(url, data | {"api_key_input": NEW_KEY}).json()
        assert tested["ok"] and tested["message"].startswith("OK (HTTP 200, ")
        [_, seen] = upstream.find(path="/v1/models")
        assert seen.headers["authorization"] == f"Bearer {NEW_KEY}"
        # A provider not saved yet can be tested too.
        data |= {"name": "new-one", "api_key_input": NEW_KEY}
        new = admin_client.post("/admin/routing/provider/test-connection/", data).json()
        assert new["ok"]
    # Nothing was saved.
    assert Provider.objects.get(pk=provider.pk).base_url == "http://127.0.0.1:9/v1"
    assert stored_key(provider) == KEY and not Provider.objects.filter(name="new-one").exists()
    invalid = admin_client.post(url, data | {"connect_timeout": "-1"}).json()
    assert not invalid["ok"] and invalid["message"].startswith("Correct the form first.")
    assert admin_client.get(url).status_code == 405


def test_the_cloud_routing_switch_is_flipped_in_the_admin_and_audited(
    admin_client: Client, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from django.contrib.admin.models import LogEntry

    from routing import selectors
    from routing.models import RoutingState, RoutingSwitch

    settings.ENABLE_CLOUD_ROUTING = False  # the initial value, until the switch is set
    assert "Cloud routing: OFF" in admin_client.get("/admin/").content.decode()
    page = admin_client.get("/admin/routing/routingswitch/", follow=True)
    assert "off (from ENABLE_CLOUD_ROUTING)" in page.content.decode()
    before = RoutingState.current()
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post("/admin/routing/routingswitch/1/change/",
                                     {"cloud_routing": "True"}, follow=True)  # fmt: skip
    assert "Cloud routing is now ON." in response.content.decode()
    assert RoutingSwitch.current() is True and RoutingState.current() > before
    assert selectors.snapshot().table.cloud_routing  # what requests see
    assert "Cloud routing: ON" in admin_client.get("/admin/").content.decode()
    [entry] = LogEntry.objects.filter(object_repr="cloud routing")
    assert entry.is_change() and entry.user.username == "admin"
    history = admin_client.get("/admin/routing/routingswitch/1/history/").content.decode()
    assert "Changed Cloud routing." in history
    # Back to "as ENABLE_CLOUD_ROUTING says": the environment decides again.
    admin_client.post("/admin/routing/routingswitch/1/change/", {"cloud_routing": ""})
    settings.ENABLE_CLOUD_ROUTING = True
    assert RoutingSwitch.current() is None and selectors.cloud_routing()
    assert admin_client.get("/admin/routing/routingswitch/1/delete/").status_code == 403


@pytest.mark.django_db(transaction=True)  # the view's thread hop closes old connections
def test_the_playground_applies_the_chosen_keys_rules(
    admin_client: Client, client: Client
) -> None:
    import json

    key, _ = create_api_key("only-gpt", allowed_models=["gpt-*"])
    url = "/admin/playground/stream/"
    body = {"model": "demo", "prompt": "Hi", "key": str(key.pk)}
    refused = admin_client.post(url, json.dumps(body), content_type="application/json")
    assert refused.status_code == 403 and "demo" in refused.json()["error"]
    bad = admin_client.post(url, json.dumps(body | {"key": "999999"}),
                            content_type="application/json")  # fmt: skip
    assert bad.status_code == 401
    empty = admin_client.post(url, json.dumps({"model": ""}), content_type="application/json")
    assert empty.status_code == 400
    # Staff only: anyone else is sent to the login page.
    assert client.post(url, json.dumps(body), content_type="application/json").status_code == 302
    page = admin_client.get("/admin/playground/").content.decode()
    assert 'id="pg-model"' in page and "only-gpt" in page


@pytest.mark.django_db(transaction=True)  # the view's thread hop closes old connections
def test_the_playground_shows_upstream_errors_scrubbed(admin_client: Client, settings: Any) -> None:
    """An upstream's error text reaches the page as it reaches API clients: without
    the provider key it echoes, or the internal address it was sent to."""
    import json

    from routing import selectors
    from routing.config_io import import_document

    from .conftest import single_try_provider
    from .routing_spec import routing_document
    from .test_edge_scrub import KEY as ECHOED
    from .test_edge_scrub import echoing_upstream

    settings.ENABLE_CLOUD_ROUTING = True
    with echoing_upstream() as url:
        document, keys = routing_document({
            "providers": [{"name": "echo", **single_try_provider(ECHOED, base_url=url)}],
            "mappings": [{"pattern": "echo-1", "chain": [{"provider": "echo"}]}],
        })  # fmt: skip
        import_document(document, keys, dry_run=False)
        selectors.invalidate()
        body = {"model": "echo-1", "prompt": "Hi", "key": ""}
        response = admin_client.post(
            "/admin/playground/stream/", json.dumps(body), content_type="application/json"
        )
    text = response.content.decode()
    assert response.status_code == 502, text
    assert "Incorrect API key provided" in text  # the upstream's words, ...
    assert ECHOED not in text and ECHOED[:12] not in text  # ... without the key
    assert "127.0.0.1" not in text and url.split("//")[1] not in text
