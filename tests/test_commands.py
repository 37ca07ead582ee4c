"""Management commands: healthcheck, routes, rotate_credentials, export/import_config."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from fake_upstream import FakeUpstream
from routing.config_schema import load_yaml
from routing.models import (
    BackendMapping,
    CloudCredential,
    CredentialError,
    LocalModel,
    MappingTarget,
    Provider,
    RoutingState,
)

from .conftest import free_port

pytestmark = pytest.mark.django_db
UPSTREAM_KEYS = ("sk-good-key",)  # the fake upstream takes these (conftest.upstream)


def run(*args: str, **options: Any) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


def fails(*args: str, **options: Any) -> tuple[str, str, str]:
    """(stdout, stderr, error message) of a command that must exit with an error."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError) as info:
        call_command(*args, stdout=out, stderr=err, **options)
    assert info.value.returncode == 1  # manage.py exits with it
    return out.getvalue(), err.getvalue(), str(info.value)


def make_provider(name: str, key: str, base_url: str = "", **fields: Any) -> Provider:
    provider = Provider.objects.create(name=name, kind="openai", base_url=base_url, **fields)
    credential = CloudCredential(provider=provider)
    credential.set_key(key)
    credential.save()
    return provider


def chain(pattern: str, priority: int, *targets: LocalModel | Provider, **fields: Any) -> None:
    mapping = BackendMapping.objects.create(pattern=pattern, priority=priority, **fields)
    for position, target in enumerate(targets):
        kind = "local_model" if isinstance(target, LocalModel) else "provider"
        MappingTarget.objects.create(mapping=mapping, position=position, **{kind: target})


def raw_key(provider: Provider) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT api_key FROM routing_cloudcredential WHERE provider_id = %s", [provider.pk]
        )
        return str(cursor.fetchone()[0])


def reveal(provider: Provider) -> str:
    return CloudCredential.objects.select_related("provider").get(provider=provider).reveal()


# ---------------------------------------------------------------- healthcheck


class TestHealthcheck:
    def test_loadable_local_model_is_ok(self, demo_model_path: Path) -> None:
        LocalModel.objects.create(name="demo", path=str(demo_model_path))
        LocalModel.objects.create(name="off", path="/nowhere", enabled=False)
        out, _ = run("healthcheck", "--timeout", "60")
        lines = out.splitlines()
        assert lines[0].split() == ["NAME", "KIND", "STATUS", "LATENCY", "ERROR"]
        assert lines[1].split()[:3] == ["default", "database", "OK"]
        assert lines[2].split()[:3] == ["demo", "local", "OK"]
        assert "off" not in out  # disabled: not checked
        # Aligned: every row's STATUS column starts at the same offset.
        offsets = {lines[0].index("STATUS")} | {line.index(" OK") + 1 for line in lines[1:]}
        assert len(offsets) == 1

    def test_broken_local_model_fails_with_exit_status_1(self, tmp_path: Path) -> None:
        (tmp_path / "empty").mkdir()
        LocalModel.objects.create(name="broken", path=str(tmp_path / "empty"))
        out, _, error = fails("healthcheck", "--timeout", "30")
        row = next(line for line in out.splitlines() if line.startswith("broken"))
        assert row.split()[:3] == ["broken", "local", "FAIL"]
        assert "local 'broken'" in error

    def test_provider_on_a_closed_port_fails(self) -> None:
        make_provider("closed", "sk-x", f"http://127.0.0.1:{free_port()}/v1")
        out, _, error = fails("healthcheck", "--timeout", "2")
        row = next(line for line in out.splitlines() if line.startswith("closed"))
        assert row.split()[:3] == ["closed", "openai", "FAIL"]
        assert "ConnectError" in row
        assert "openai 'closed'" in error

    def test_provider_key_accepted_or_refused(self, upstream: FakeUpstream) -> None:
        make_provider("good", "sk-good-key", f"{upstream.url}/v1")
        make_provider("badkey", "sk-wrong", f"{upstream.url}/v1")
        make_provider("nokey-off", "sk-x", f"{upstream.url}/v1", enabled=False)
        Provider.objects.create(name="nokey", kind="anthropic", base_url=upstream.url)
        out, _, error = fails("healthcheck", "--json")
        checks = {c["name"]: c for c in json.loads(out)["checks"]}
        assert checks["good"]["ok"] and checks["good"]["http_status"] == 200
        assert not checks["badkey"]["ok"] and checks["badkey"]["http_status"] == 401
        assert "refused" in checks["badkey"]["error"]
        assert "no API key" in checks["nokey"]["error"]
        assert "nokey-off" not in checks
        assert "badkey" in error and "'good'" not in error
        assert "sk-wrong" not in out + error

    def test_checks_run_together_and_a_broken_provider_is_one_row(self) -> None:
        import socket
        import threading

        # A server that accepts and never answers, counting the connections open
        # at once: checks run side by side have all three open together, checks
        # run one after another never more than one (each waits its timeout).
        open_now, most = [0], [0]
        lock = threading.Lock()

        def serve(listener: socket.socket) -> None:
            held = []
            while True:
                try:
                    connection, _ = listener.accept()
                except OSError:
                    break  # the test is over
                held.append(connection)
                with lock:
                    open_now[0] = sum(1 for c in held if _still_open(c))
                    most[0] = max(most[0], open_now[0])
            for connection in held:
                connection.close()

        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen(8)
            url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1"
            accepting = threading.Thread(target=serve, args=(silent,), daemon=True)
            accepting.start()
            for name in ("slow-a", "slow-b", "slow-c"):
                make_provider(name, "sk-x", url)
            broken = make_provider("broken-headers", "sk-x", url)
            Provider.objects.filter(pk=broken.pk).update(extra_headers=["x", 1])  # past the admin
            out, _, _ = fails("healthcheck", "--json", "--timeout", "2")
            silent.shutdown(socket.SHUT_RDWR)
        accepting.join(10)
        checks = {c["name"]: c for c in json.loads(out)["checks"]}
        assert all("no answer within 2 s" in checks[n]["error"] for n in ("slow-a", "slow-b"))
        assert "unusable extra headers" in checks["broken-headers"]["error"]
        assert most[0] == 3  # the three checks were waiting at the same time

    def test_json_document(self, demo_model_path: Path) -> None:
        LocalModel.objects.create(name="demo", path=str(demo_model_path))
        out, _ = run("healthcheck", "--json", "--timeout", "60")
        document = json.loads(out)
        assert document["ok"] is True
        assert [(c["name"], c["kind"], c["status"]) for c in document["checks"]] == [
            ("default", "database", "OK"),
            ("demo", "local", "OK"),
        ]
        assert all(c["latency_ms"] >= 0 and c["error"] == "" for c in document["checks"])


# ---------------------------------------------------------------- routes


@pytest.fixture
def routed(settings: Any) -> None:
    settings.ENABLE_CLOUD_ROUTING = True
    demo = LocalModel.objects.create(name="demo", path="demo")
    openai = make_provider("openai", "sk-routes-secret-1234")
    chain("gpt-4o", 0, openai)
    chain("gpt-*", 5, demo, openai)
    chain("claude-*", 0, openai)
    chain("claude-3", 0, demo)
    chain("*", 100, openai, enabled=False)


class TestRoutes:
    def test_overview(self, routed: None) -> None:
        out, _ = run("routes")
        assert "Cloud routing: ON" in out
        assert "demo" in out and "key ...1234" in out
        listed = re.findall(r"^ +\d+\. (\S+)", out, flags=re.MULTILINE)
        assert listed == ["gpt-*", "claude-3", "gpt-4o", "claude-*"]  # resolution order
        assert "local:demo -> openai:*" in out
        assert "Disabled mappings (ignored): *" in out

    def test_priority_beats_specificity(self, routed: None) -> None:
        out, _ = run("routes", "gpt-4o")
        assert "mapping 'gpt-*' (priority 5) wins" in out
        assert "beats 'gpt-4o': lower priority (0 < 5)" in out
        assert "primary:     local model demo, model 'demo'" in out
        assert "fallback 1:  provider openai, model 'gpt-4o'" in out

    def test_exact_beats_wildcard_and_disabled_is_ignored(self, routed: None) -> None:
        out, _ = run("routes", "claude-3")
        assert "mapping 'claude-3' (priority 0) wins" in out
        assert "beats 'claude-*': equal priority; a wildcard pattern loses" in out
        assert "'*'" not in out  # the disabled catch-all takes no part

    def test_no_route_exits_1(self, routed: None) -> None:
        out, _, error = fails("routes", "llama-3")
        assert "no route" in out and "llama-3" in error

    def test_local_model_of_that_name_with_cloud_routing_off(
        self, routed: None, settings: Any
    ) -> None:
        settings.ENABLE_CLOUD_ROUTING = False
        out, _ = run("routes", "demo")
        assert "Cloud routing: OFF" in out
        assert "served by the local model of that name" in out
        assert "local model demo, model 'demo'" in out
        _, _, error = fails("routes", "gpt-4o")  # mappings are ignored
        assert "gpt-4o" in error

    def test_mapping_whose_targets_are_all_disabled_is_skipped(self, routed: None) -> None:
        LocalModel.objects.filter(name="demo").update(enabled=False)
        out, _ = run("routes", "claude-3")
        assert "mapping 'claude-*' (priority 0) wins" in out
        assert "skips 'claude-3': its chain is empty" in out
        out, _ = run("routes")
        assert "claude-3                 priority 0     (empty: every target disabled)" in out
        assert "Disabled local models (ignored): demo" in out


# ---------------------------------------------------------------- rotate_credentials


class TestRotateCredentials:
    def test_rotates_to_the_newest_key(self, settings: Any) -> None:
        key_a, key_b = Fernet.generate_key().decode(), Fernet.generate_key().decode()
        settings.GATEWAY_FERNET_KEYS = [key_a]
        provider = make_provider("openai", "sk-rotate-secret-9876")
        before = raw_key(provider)
        version = RoutingState.current()
        settings.GATEWAY_FERNET_KEYS = [key_b, key_a]
        out, _ = run("rotate_credentials")
        assert "rotated 1 provider key(s)" in out
        after = raw_key(provider)
        assert after != before and after.startswith("gAAAA")
        assert "sk-rotate" not in after and "sk-rotate" not in out
        assert RoutingState.current() > version  # other processes reload their snapshot
        settings.GATEWAY_FERNET_KEYS = [key_b]
        assert reveal(provider) == "sk-rotate-secret-9876"
        settings.GATEWAY_FERNET_KEYS = [key_a]
        with pytest.raises(CredentialError, match="'openai'"):
            reveal(provider)  # really re-encrypted, not merely still readable

    def test_a_malformed_fernet_key_is_named_not_blamed_on_the_rows(self, settings: Any) -> None:
        make_provider("openai", "sk-rotate-secret-9876")
        settings.GATEWAY_FERNET_KEYS = [Fernet.generate_key().decode(), "not-a-key"]
        _, _, error = fails("check")
        assert "routing.E001" in error and "entry 2 is not a Fernet key" in error
        assert "not-a-key" not in error
        _, _, error = fails("rotate_credentials")
        assert "entry 2 is not a Fernet key" in error

    def test_undecryptable_key_aborts_and_changes_nothing(self, settings: Any) -> None:
        key_a, key_b, lost = (Fernet.generate_key().decode() for _ in range(3))
        settings.GATEWAY_FERNET_KEYS = [key_a]
        fine = make_provider("fine", "sk-fine-secret")
        settings.GATEWAY_FERNET_KEYS = [lost]
        orphan = make_provider("orphan", "sk-orphan-secret")
        before = {p.name: raw_key(p) for p in (fine, orphan)}
        settings.GATEWAY_FERNET_KEYS = [key_b, key_a]
        out, err, error = fails("rotate_credentials")
        assert "'orphan'" in error and "'fine'" not in error
        assert "nothing was changed" in error
        for text in (out, err, error):
            assert "sk-" not in text and "gAAAA" not in text
            assert all(k not in text for k in (key_a, key_b, lost))
        assert {p.name: raw_key(p) for p in (fine, orphan)} == before

    def test_nothing_to_rotate(self) -> None:
        out, _ = run("rotate_credentials")
        assert "nothing to rotate" in out


# ---------------------------------------------------------------- export / import

CONFIG = """\
version: 1
local_models:
  - {name: demo, path: /models/demo, enabled: true, preload: true, context_length: 4096,
     default_max_tokens: 256, default_temperature: 0.7, default_top_p: null,
     description: "tiny"}
providers:
  - name: openai
    kind: openai
    base_url: ""
    api_key_env: TEST_OPENAI_KEY
    extra_headers: {OpenAI-Organization: org-1}
    timeouts: {connect: 3, first_byte: 30.0, stream_idle: 20.0, total: 300.0}
    retries: {max_retries: 1, backoff: 0.25, retry_after_cap: 10.0}
    breaker: {fail_max: 3, reset_timeout: 15.0}
    enabled: true
    description: ""
  - name: claude
    kind: anthropic
    api_key_env: TEST_ANTHROPIC_KEY
mappings:
  - pattern: "gpt-*"
    priority: 10
    chain:
      - {provider: openai, model: gpt-4o-mini}
      - {local: demo}
  - pattern: claude-3
    enabled: false
    description: "parked"
    chain: [{provider: claude}, {provider: openai, model: gpt-4o}]
"""


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_OPENAI_KEY", "sk-openai-plain-1111")
    monkeypatch.setenv("TEST_ANTHROPIC_KEY", "sk-ant-plain-2222")


def write(tmp_path: Path, text: str, name: str = "routing.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def counts() -> dict[str, int]:
    models = (LocalModel, Provider, CloudCredential, BackendMapping, MappingTarget)
    return {m.__name__: m.objects.count() for m in models}


def snapshot_rows() -> list[tuple[Any, ...]]:
    """Every routing row with its updated_at: a no-op import changes none of them."""
    rows: list[tuple[Any, ...]] = []
    for model in (LocalModel, Provider, CloudCredential, BackendMapping, MappingTarget):
        rows += [tuple(r.values()) for r in model.objects.order_by("pk").values()]
    return rows


class TestImportExport:
    def test_import_creates_everything(self, tmp_path: Path, keys: None) -> None:
        out, err = run("import_config", write(tmp_path, CONFIG))
        assert "imported" in out and "create provider 'openai'" in out
        assert "sk-openai" not in out + err
        demo = LocalModel.objects.get(name="demo")
        assert (demo.preload, demo.context_length, demo.default_temperature) == (True, 4096, 0.7)
        openai = Provider.objects.get(name="openai")
        assert openai.connect_timeout == 3.0 and openai.max_retries == 1
        assert openai.extra_headers == {"OpenAI-Organization": "org-1"}
        assert reveal(openai) == "sk-openai-plain-1111"
        assert openai.credential.source_env == "TEST_OPENAI_KEY"
        claude = Provider.objects.get(name="claude")
        assert claude.total_timeout == 600.0  # omitted keys take the model defaults
        assert "sk-ant-plain" not in raw_key(claude)
        gpt = BackendMapping.objects.get(pattern="gpt-*")
        assert [str(t) for t in gpt.targets.all()] == ["openai:gpt-4o-mini", "local:demo"]
        assert [t.position for t in gpt.targets.all()] == [0, 1]
        assert not BackendMapping.objects.get(pattern="claude-3").enabled

    def test_round_trip_is_a_no_op(self, tmp_path: Path, keys: None) -> None:
        run("import_config", write(tmp_path, CONFIG))
        exported, _ = run("export_config")
        rows, version = snapshot_rows(), RoutingState.current()
        out, _ = run("import_config", write(tmp_path, exported, "exported.yaml"))
        assert "no changes" in out
        assert snapshot_rows() == rows and RoutingState.current() == version
        # Into an empty database, the export rebuilds the same configuration.
        for model in (MappingTarget, BackendMapping, CloudCredential, Provider, LocalModel):
            model.objects.all().delete()
        run("import_config", write(tmp_path, exported, "exported.yaml"))
        again, _ = run("export_config")
        assert again == exported
        assert load_yaml(exported)["mappings"][0]["chain"] == [
            {"provider": "openai", "model": "gpt-4o-mini"},
            {"local": "demo"},
        ]

    def test_import_twice_is_idempotent(self, tmp_path: Path, keys: None) -> None:
        path = write(tmp_path, CONFIG)
        run("import_config", path)
        before = counts()
        out, _ = run("import_config", path)
        assert "no changes" in out
        assert (
            counts()
            == before
            == {
                "LocalModel": 1,
                "Provider": 2,
                "CloudCredential": 2,
                "BackendMapping": 2,
                "MappingTarget": 4,
            }
        )

    def test_updates_and_chain_replaced_as_a_whole(
        self, tmp_path: Path, keys: None, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        run("import_config", write(tmp_path, CONFIG))
        LocalModel.objects.create(name="other", path="/m/other")  # not in the file: kept
        changed = CONFIG.replace("priority: 10", "priority: 20").replace(
            "      - {provider: openai, model: gpt-4o-mini}\n      - {local: demo}\n",
            "      - {local: demo}\n",
        )
        monkeypatch.setenv("TEST_OPENAI_KEY", "sk-openai-rotated-3333")
        out, _ = run("import_config", write(tmp_path, changed))
        assert "update mapping 'gpt-*': priority" in out
        assert "set the chain of mapping 'gpt-*': local:demo" in out
        assert "set the API key of provider 'openai' from $TEST_OPENAI_KEY" in out
        gpt = BackendMapping.objects.get(pattern="gpt-*")
        assert gpt.priority == 20 and [str(t) for t in gpt.targets.all()] == ["local:demo"]
        assert reveal(Provider.objects.get(name="openai")) == "sk-openai-rotated-3333"
        assert LocalModel.objects.filter(name="other").exists()
        assert MappingTarget.objects.count() == 3

    def test_dry_run_writes_nothing(self, tmp_path: Path, keys: None) -> None:
        before = counts()
        out, _ = run("import_config", write(tmp_path, CONFIG), dry_run=True)
        assert "would create local model 'demo'" in out
        assert "would set the API key of provider 'claude' from $TEST_ANTHROPIC_KEY" in out
        assert "dry run" in out and counts() == before

    def test_every_problem_is_reported_and_nothing_written(
        self, tmp_path: Path, keys: None, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        Provider.objects.create(name="existing", kind="openai")
        before, rows = counts(), snapshot_rows()
        monkeypatch.delenv("TEST_ANTHROPIC_KEY")
        bad = (
            (
                CONFIG.replace("preload: true", "preload: maybe")
                .replace("retry_after_cap: 10.0", "retry_after_cap: 10.0, jitter: 1")
                .replace("kind: openai", "kind: azure")
                .replace('pattern: "gpt-*"', 'pattern: "gpt-[*"')
                .replace("{local: demo}", "{local: nope}")
                .replace("{provider: claude}", "{provider: ghost}")
            )
            + "  - {pattern: empty, chain: []}\n"
            + "  - {pattern: existing, chain: [{provider: existing}]}\n"
        )
        _, _, error = fails("import_config", write(tmp_path, bad))
        for expected in (
            "local_models[0].preload: expected true or false",
            "providers[0].retries: unknown key 'jitter'",
            "providers[0].kind: Value 'azure' is not a valid choice",
            "providers[1].api_key_env: environment variable TEST_ANTHROPIC_KEY is not set",
            "mappings[0].pattern: Unbalanced [ ]",
            "mappings[0].chain[1]: unknown local model 'nope'",
            "mappings[1].chain[0]: unknown provider 'ghost'",
            "mappings[2].chain: expected a list of at least one target",
            "nothing was written",
        ):
            assert expected in error
        assert "existing" not in error  # a provider only in the database is a valid target
        assert counts() == before and snapshot_rows() == rows

    def test_wrong_types_and_secret_headers_are_problems_not_crashes(
        self, tmp_path: Path, keys: None
    ) -> None:
        bad = (
            "version: 1\n"
            "local_models:\n  - {name: a, path: /x, enabled: 'yes'}\n"
            "providers:\n  - {name: p, kind: openai, enabled: 2, api_key_env: null,\n"
            "     extra_headers: {Authorization: Bearer sk-1}}\n"
            "mappings:\n  - {pattern: m, chain: [{local: a}, {provider: p}]}\n"
        )
        _, _, error = fails("import_config", write(tmp_path, bad))
        assert "local_models[0].enabled: expected true or false" in error
        assert "providers[0].enabled: expected true or false" in error
        assert "Traceback" not in error
        secret = bad.replace("enabled: 2", "enabled: true").replace("enabled: 'yes'", "enabled: no")
        _, _, error = fails("import_config", write(tmp_path, secret))
        assert "providers[0].extra_headers: 'Authorization' carries a secret" in error

    def test_missing_env_var(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("TEST_OPENAI_KEY", "sk-openai-plain-1111")
        monkeypatch.setenv("TEST_ANTHROPIC_KEY", "   ")  # blank counts as missing
        _, _, error = fails("import_config", write(tmp_path, CONFIG))
        assert "1 problem(s)" in error
        assert "providers[1].api_key_env: environment variable TEST_ANTHROPIC_KEY" in error
        assert counts() == dict.fromkeys(counts(), 0)

    def test_structure_errors(self, tmp_path: Path) -> None:
        _, _, error = fails(
            "import_config", write(tmp_path, "version: 2\nextra: 1\nproviders: {}\n")
        )
        assert "version: expected 1, got 2" in error
        assert "document: unknown key 'extra'" in error
        assert "providers: expected a list" in error
        _, _, error = fails("import_config", write(tmp_path, "version: 1\nversion: 1\n"))
        assert "duplicate key 'version'" in error
        _, _, error = fails("import_config", write(tmp_path, "a: [\n"))
        assert "not valid YAML" in error
        target = "mappings:\n  - {pattern: x, chain: [{local: a, provider: b}, {provider: 1}]}\n"
        _, _, error = fails("import_config", write(tmp_path, f"version: 1\n{target}"))
        assert "mappings[0].chain[0]: needs exactly one of 'provider' or 'local'" in error
        assert "mappings[0].chain[1]: expected string names" in error
        dup = "version: 1\nlocal_models:\n  - {name: a, path: a}\n  - {name: a, path: b}\n"
        _, _, error = fails("import_config", write(tmp_path, dup))
        assert "local_models[1].name: 'a' is also at local_models[0]" in error

    def test_export_writes_no_secret(self, tmp_path: Path, keys: None) -> None:
        run("import_config", write(tmp_path, CONFIG))
        admin_set = make_provider("manual", "sk-manual-plain-4444")
        output = tmp_path / "out.yaml"
        out, err = run("export_config", "-o", str(output))
        text = output.read_text()
        assert "wrote" in out
        for secret in ("sk-openai-plain-1111", "sk-ant-plain-2222", "sk-manual-plain-4444"):
            assert secret not in text and secret not in out + err
        assert "gAAAA" not in text and raw_key(admin_set) not in text
        document = yaml.safe_load(text)
        envs = {p["name"]: p["api_key_env"] for p in document["providers"]}
        assert envs == {"claude": "TEST_ANTHROPIC_KEY", "manual": None, "openai": "TEST_OPENAI_KEY"}
        assert "provider 'manual'" in err  # its key cannot be restored from this file
        assert document["version"] == 1
        assert list(document["providers"][0]) == [
            "name",
            "kind",
            "base_url",
            "api_key_env",
            "extra_headers",
            "timeouts",
            "retries",
            "breaker",
            "prefill",
            "enabled",
            "description",
        ]


def _still_open(connection: object) -> bool:
    """Whether the client has not closed this accepted connection: what it sent
    is read and dropped, up to an end of file (closed) or nothing more (open)."""
    import socket

    assert isinstance(connection, socket.socket)
    while True:
        try:
            if connection.recv(65536, socket.MSG_DONTWAIT) == b"":
                return False
        except BlockingIOError:
            return True
        except OSError:
            return False
