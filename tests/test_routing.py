"""Routing configuration: resolution rules, caching, encryption at rest."""

from __future__ import annotations

import time

import httpx
import pytest
from cryptography.fernet import Fernet
from django.db import connection

from inference.cloud.config import PROVIDER_KINDS
from routing import selectors
from routing.crypto import Secret
from routing.models import (
    BackendMapping,
    CloudCredential,
    CredentialError,
    LocalModel,
    MappingTarget,
    Provider,
    RoutingState,
)
from routing.provider_config import provider_config
from routing.resolution import Mapping, RoutingTable, Target

from .conftest import LiveServer, configure_routing

OPENAI = Target("provider", "openai")
ANTHROPIC = Target("provider", "anthropic", "claude-x")
LOCAL = Target("local", "demo")


def table(*mappings: Mapping, local: frozenset[str] = frozenset(), on: bool = True) -> RoutingTable:
    return RoutingTable(list(mappings), local, cloud_routing=on)


class TestResolutionRule:
    def test_priority_beats_specificity(self) -> None:
        t = table(Mapping(1, "gpt-4o", 0, (OPENAI,)), Mapping(2, "gpt-*", 5, (LOCAL,)))
        route = t.resolve("gpt-4o")
        assert route is not None and route.mapping is not None
        assert route.mapping.pattern == "gpt-*"
        assert "outranks 'gpt-4o'" in route.reason

    def test_exact_beats_wildcard_at_equal_priority(self) -> None:
        t = table(Mapping(1, "gpt-*", 0, (LOCAL,)), Mapping(2, "gpt-4o", 0, (OPENAI,)))
        assert t.resolve("gpt-4o").mapping.pattern == "gpt-4o"  # type: ignore[union-attr]
        assert t.resolve("gpt-3").mapping.pattern == "gpt-*"  # type: ignore[union-attr]

    def test_more_literal_characters_win_then_fewer_wildcards_then_older(self) -> None:
        t = table(
            Mapping(1, "*", 0, (LOCAL,)),
            Mapping(2, "claude-*", 0, (ANTHROPIC,)),
            Mapping(3, "claude-3-*", 0, (OPENAI,)),
        )
        assert t.resolve("claude-3-opus").mapping.pattern == "claude-3-*"  # type: ignore[union-attr]
        assert t.resolve("claude-2").mapping.pattern == "claude-*"  # type: ignore[union-attr]
        assert t.resolve("other").mapping.pattern == "*"  # type: ignore[union-attr]
        tie = table(Mapping(9, "a?c", 0, (LOCAL,)), Mapping(4, "a?c", 0, (OPENAI,)))
        assert tie.resolve("abc").mapping.id == 4  # type: ignore[union-attr]
        fewer = table(Mapping(1, "ab*?", 0, (LOCAL,)), Mapping(2, "ab*", 0, (OPENAI,)))
        assert fewer.resolve("abcd").mapping.id == 2  # type: ignore[union-attr]

    def test_chain_order_and_upstream_names(self) -> None:
        t = table(Mapping(1, "claude-*", 0, (ANTHROPIC, OPENAI, LOCAL)))
        route = t.resolve("claude-3")
        assert route is not None
        assert [(h.target.name, h.model) for h in route.chain] == [
            ("anthropic", "claude-x"),
            ("openai", "claude-3"),  # empty upstream name: the requested one
            ("demo", "demo"),
        ]

    def test_no_match_falls_back_to_local_name_or_nothing(self) -> None:
        t = table(Mapping(1, "gpt-*", 0, (OPENAI,)), local=frozenset({"demo"}))
        assert t.resolve("demo").chain[0].target == Target("local", "demo")  # type: ignore[union-attr]
        assert t.resolve("unknown") is None

    def test_cloud_routing_off_ignores_mappings(self) -> None:
        t = table(Mapping(1, "*", 10, (OPENAI,)), local=frozenset({"demo"}), on=False)
        assert t.resolve("demo").mapping is None  # type: ignore[union-attr]
        assert t.resolve("gpt-4o") is None
        assert t.advertised_models() == ["demo"]

    def test_empty_chain_never_routes(self) -> None:
        t = table(Mapping(1, "x*", 10, ()), Mapping(2, "x*y", 0, (LOCAL,)))
        assert t.resolve("xay").mapping.id == 2  # type: ignore[union-attr]

    def test_advertised_models(self) -> None:
        t = table(
            Mapping(1, "gpt-4o", 0, (OPENAI,)),
            Mapping(2, "claude-*", 0, (ANTHROPIC, OPENAI)),
            local=frozenset({"demo"}),
        )
        assert t.advertised_models() == ["claude-x", "demo", "gpt-4o"]
        unreachable = table(
            Mapping(1, "gpt-*", 0, (Target("provider", "openai", "claude-3-haiku"),)),
            Mapping(2, "o1", 0, ()),  # every target disabled
        )
        # Neither "claude-3-haiku" (no mapping matches it) nor "o1" could be asked for.
        assert unreachable.advertised_models() == []

    def test_cache_is_bounded(self) -> None:
        t = table(Mapping(1, "*", 0, (LOCAL,)))
        for i in range(RoutingTable.CACHE_SIZE + 10):
            t.resolve(f"m{i}")
        assert len(t._cache) <= RoutingTable.CACHE_SIZE


@pytest.fixture
def demo_row(db: None, demo_model_path) -> LocalModel:
    return LocalModel.objects.create(name="demo", path=str(demo_model_path))


@pytest.fixture
def provider(db: None) -> Provider:
    p = Provider.objects.create(name="openai", kind="openai", base_url="http://127.0.0.1:9/v1")
    credential = CloudCredential(provider=p)
    credential.set_key("sk-live-secret-1234")
    credential.save()
    return p


def raw_key_column(provider: Provider) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT api_key FROM routing_cloudcredential WHERE provider_id = %s", [provider.pk]
        )
        return cursor.fetchone()[0]


class TestCredentials:
    def test_encrypted_at_rest(self, provider: Provider) -> None:
        raw = raw_key_column(provider)
        assert "sk-live-secret" not in raw
        assert raw.startswith("gAAAA")  # a Fernet token
        fresh = Provider.objects.select_related("credential").get(pk=provider.pk)
        assert provider_config(fresh).api_key == "sk-live-secret-1234"
        assert fresh.credential.key_suffix == "1234"

    def test_secret_never_printed(self, provider: Provider) -> None:
        credential = CloudCredential.objects.get(provider=provider)
        for text in (
            repr(credential),
            str(credential),
            repr(credential.api_key),
            str(credential.api_key),
        ):
            assert "sk-live" not in text
        config = provider_config(Provider.objects.get(pk=provider.pk))
        assert "sk-live" not in repr(config)

    def test_wrong_key_is_an_error_naming_the_provider(self, provider: Provider, settings) -> None:
        settings.GATEWAY_FERNET_KEYS = [Fernet.generate_key().decode()]
        fresh = Provider.objects.select_related("credential").get(pk=provider.pk)
        with pytest.raises(CredentialError) as info:
            provider_config(fresh)
        message = str(info.value)
        assert "'openai'" in message
        assert raw_key_column(provider) not in message
        assert "sk-live" not in message

    def test_old_keys_still_decrypt(self, provider: Provider, settings) -> None:
        settings.GATEWAY_FERNET_KEYS = [
            Fernet.generate_key().decode(),
            *settings.GATEWAY_FERNET_KEYS,
        ]
        fresh = Provider.objects.select_related("credential").get(pk=provider.pk)
        assert provider_config(fresh).api_key == "sk-live-secret-1234"

    def test_kinds_match_the_column(self) -> None:
        """The cloud client's kinds are exactly the provider column's choices."""
        assert set(PROVIDER_KINDS) == set(Provider.Kind.values)

    def test_unknown_kind_is_an_error_naming_the_provider(self, provider: Provider) -> None:
        # A raw UPDATE can write what the column's choices would refuse.
        Provider.objects.filter(pk=provider.pk).update(kind="gopher")
        fresh = Provider.objects.select_related("credential").get(pk=provider.pk)
        with pytest.raises(CredentialError, match="'openai' has an unknown kind 'gopher'"):
            provider_config(fresh)

    def test_missing_credential(self, db: None) -> None:
        p = Provider.objects.create(name="nokey", kind="anthropic")
        with pytest.raises(CredentialError, match="no API key"):
            provider_config(p)

    def test_secret_equality_uses_ciphertext(self) -> None:
        token = Secret(plain="abc").token
        assert Secret(token=token) == Secret(token=token)


class TestSnapshot:
    def test_changes_invalidate_the_cache(
        self, demo_row: LocalModel, provider: Provider, settings
    ) -> None:
        settings.ENABLE_CLOUD_ROUTING = True
        assert selectors.snapshot().table.resolve("gpt-4o") is None
        mapping = BackendMapping.objects.create(pattern="gpt-*", priority=1)
        MappingTarget.objects.create(mapping=mapping, provider=provider, position=0)
        MappingTarget.objects.create(mapping=mapping, local_model=demo_row, position=1)
        route = selectors.snapshot().table.resolve("gpt-4o")
        assert route is not None
        assert [h.label for h in route.chain] == ["provider:openai/gpt-4o", "local:demo/demo"]
        provider.enabled = False
        provider.save()
        route = selectors.snapshot().table.resolve("gpt-4o")
        assert [h.label for h in route.chain] == ["local:demo/demo"]  # type: ignore[union-attr]
        mapping.enabled = False
        mapping.save()
        assert selectors.snapshot().table.resolve("gpt-4o") is None

    def test_version_stamp_detects_changes_from_elsewhere(
        self, demo_row: LocalModel, settings
    ) -> None:
        settings.ENABLE_CLOUD_ROUTING = True
        settings.GATEWAY_ROUTING_REFRESH_SECONDS = 0
        first = selectors.snapshot()
        # A write that bypasses this process's signals, as another process's would.
        BackendMapping.objects.bulk_create([BackendMapping(pattern="alias-*")])
        MappingTarget.objects.bulk_create(
            [MappingTarget(mapping=BackendMapping.objects.get(), local_model=demo_row)]
        )
        assert selectors.snapshot() is first  # unchanged version: cached
        RoutingState.bump()
        assert selectors.snapshot().table.resolve("alias-1") is not None

    def test_mode_switch_rebuilds(self, demo_row: LocalModel, settings) -> None:
        settings.ENABLE_CLOUD_ROUTING = False
        assert not selectors.snapshot().table.cloud_routing
        settings.ENABLE_CLOUD_ROUTING = True
        assert selectors.snapshot().table.cloud_routing


@pytest.fixture(scope="module")
def routed_gateway(tmp_path_factory: pytest.TempPathFactory):
    """A live gateway and, for the changes made "elsewhere", its database: SQLite,
    or a PostgreSQL database of its own when the suite runs on PostgreSQL."""
    from .conftest import fresh_database, server_env

    data = tmp_path_factory.mktemp("routed")
    with fresh_database("gateway_routed") as database:
        env = server_env(data, ENABLE_CLOUD_ROUTING="1", **database)
        server = LiveServer(data_dir=data, env=env)
        server.prepare(demo=True)
        server.start()
        yield server
        server.stop()


def test_change_in_another_process_reaches_the_server(routed_gateway: LiveServer) -> None:
    url = f"{routed_gateway.url}/v1/models/alias-7"
    assert httpx.get(url).status_code == 404
    configure_routing(
        routed_gateway, {"mappings": [{"pattern": "alias-*", "chain": [{"local": "demo"}]}]}
    )
    deadline = time.monotonic() + 5
    while httpx.get(url).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert httpx.get(url).status_code == 200
    listed = [m["id"] for m in httpx.get(f"{routed_gateway.url}/v1/models").json()["data"]]
    assert "demo" in listed
    reply = httpx.post(
        f"{routed_gateway.url}/v1/chat/completions",
        json={"model": "alias-7", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        timeout=60,
    )
    assert reply.status_code == 200
    assert reply.headers["x-gateway-backend"] == "local:demo"


def test_dump_and_load_keep_the_key(provider: Provider, tmp_path) -> None:
    from django.core.management import call_command

    dump = tmp_path / "dump.json"
    call_command("dumpdata", "routing.cloudcredential", output=str(dump))
    assert "sk-live" not in dump.read_text()
    CloudCredential.objects.all().delete()
    call_command("loaddata", str(dump), verbosity=0)
    fresh = Provider.objects.select_related("credential").get(pk=provider.pk)
    assert provider_config(fresh).api_key == "sk-live-secret-1234"


# Transactional: the API reads the database through channels' database_sync_to_async,
# which closes the calling thread's connection (the test's, in process) around its work.
@pytest.mark.django_db(transaction=True)
def test_model_names_with_slashes_have_their_card(client, demo_model_path) -> None:  # type: ignore[no-untyped-def]
    LocalModel.objects.create(name="org/tiny-model", path=str(demo_model_path))
    listed = client.get("/v1/models").json()
    assert "org/tiny-model" in [m["id"] for m in listed["data"]]
    card = client.get("/v1/models/org/tiny-model")
    assert card.status_code == 200 and card.json()["id"] == "org/tiny-model"
    assert client.get("/v1/models/org/other").status_code == 404


@pytest.mark.django_db
def test_rebuilding_the_demo_keeps_it_disabled(tmp_path, settings) -> None:  # type: ignore[no-untyped-def]
    from routing.services import register_local_model

    settings.GATEWAY_MODELS_DIR = str(tmp_path)
    first = register_local_model("demo", tmp_path / "demo")
    assert first.enabled and first.path == "demo"
    LocalModel.objects.filter(pk=first.pk).update(enabled=False)
    again = register_local_model("demo", tmp_path / "demo-2")
    assert (again.enabled, again.path) == (False, "demo-2")
