"""The test suite's own set-up: shortcuts must give what the real commands give.

Gateways' data dirs are copied from templates (tests/data_templates.py) and their
routing is imported from YAML built from a flat spec (conftest.configure_routing);
the test database is a file in WAL mode. Each is checked against the real thing.
"""

from __future__ import annotations

import filecmp
import io
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection

from routing.config_schema import dump_yaml
from routing.models import BackendMapping, CloudCredential, LocalModel, Provider

from .conftest import LiveServer, server_env, single_try_provider
from .data_templates import DATABASE, TEMPLATES
from .routing_spec import routing_document


@pytest.mark.django_db
def test_the_sqlite_test_database_is_a_file_in_wal_mode() -> None:
    if connection.vendor != "sqlite":
        pytest.skip("the PostgreSQL run has no SQLite database")
    assert not connection.is_in_memory_db()
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        assert cursor.fetchone()[0] == "wal"


def rows(database: Path, query: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(database) as db:
        return db.execute(query).fetchall()


def test_a_prepared_data_dir_is_what_the_commands_make(tmp_path: Path) -> None:
    copied, real = tmp_path / "copied", tmp_path / "real"
    prepared = LiveServer(data_dir=copied, env=server_env(copied))
    prepared.prepare(demo=True)
    assert TEMPLATES.holds("demo", copied)  # the shortcut was taken
    # The real command (a models dir of its own turns the shortcut off) on the
    # migrated template, itself made by the real migrate.
    assert TEMPLATES.copy("migrated", real)
    real_env = server_env(real, GATEWAY_MODELS_DIR=str(real / "models"))
    LiveServer(data_dir=real, env=real_env).manage("build_demo_model")

    tables = [t for (t,) in rows(real / DATABASE, "SELECT name FROM sqlite_master "
                                 "WHERE type = 'table' ORDER BY name")]  # fmt: skip
    assert "routing_localmodel" in tables
    for table in tables:  # every row the command wrote, times aside
        columns = [c[1] for c in rows(real / DATABASE, f"PRAGMA table_info({table})")]
        kept = ", ".join(f'"{c}"' for c in columns if not c.endswith("_at"))
        query = f'SELECT {kept} FROM "{table}" ORDER BY 1'
        assert rows(copied / DATABASE, query) == rows(real / DATABASE, query), table
    compared = filecmp.dircmp(copied / "models" / "demo", real / "models" / "demo")
    assert compared.left_list == compared.right_list and compared.left_list
    _, mismatch, errors = filecmp.cmpfiles(
        copied / "models" / "demo", real / "models" / "demo", compared.common_files, shallow=False
    )
    assert mismatch == errors == []


@pytest.mark.django_db
def test_a_routing_spec_imports_as_the_fields_it_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = {
        "local_models": [{"name": "small", "path": "small", "default_max_tokens": 7}],
        "providers": [
            {**single_try_provider("sk-spec-1"), "name": "p", "base_url": "http://up:1/v1",
             "connect_timeout": 0.5, "retry_backoff": 0.1},
            {"name": "q", "kind": "anthropic"},
        ],
        "mappings": [
            {"pattern": "m-*", "priority": 3, "chain": [
                {"provider": "p", "model": "up-model"}, {"local": "small"}]},
        ],
    }  # fmt: skip
    document, keys = routing_document(spec)
    path = tmp_path / "routing.yaml"
    path.write_text(dump_yaml(document))
    for name, value in keys.items():
        monkeypatch.setenv(name, value)
    call_command("import_config", str(path), stdout=io.StringIO(), stderr=io.StringIO())

    assert LocalModel.objects.get(name="small").default_max_tokens == 7
    p = Provider.objects.select_related("credential").get(name="p")
    assert (p.kind, p.base_url, p.max_retries, p.breaker_fail_max, p.breaker_reset_timeout) == (
        "openai", "http://up:1/v1", 0, 1000, 60.0)  # fmt: skip
    assert (p.connect_timeout, p.first_byte_timeout, p.total_timeout, p.retry_backoff) == (
        0.5, 5.0, 20.0, 0.1)  # fmt: skip
    assert p.credential.reveal() == "sk-spec-1"
    assert "sk-spec-1" not in path.read_text()  # keys travel in the environment only
    assert not CloudCredential.objects.filter(provider__name="q").exists()
    mapping = BackendMapping.objects.get(pattern="m-*")
    targets = mapping.targets.select_related("provider", "local_model").order_by("position")
    assert (mapping.priority, len(targets)) == (3, 2)
    assert (targets[0].provider.name, targets[0].upstream_model) == ("p", "up-model")
    assert targets[1].local_model.name == "small" and targets[1].provider is None
    with pytest.raises(ValueError, match="no_such_field"):
        routing_document({"providers": [{"name": "x", "kind": "openai", "no_such_field": 1}]})


# These two run in this order (one file, one worker): the first leaves state in
# this process's memory, the second must not see it (conftest's autouse reset).
_LEFT_BEHIND: dict[str, Any] = {}


def test_process_state_left_by_one_test() -> None:
    import asyncio

    from gateway.dashboard import activity
    from gateway.history import history
    from gateway.keys import budgets
    from routing import balance
    from routing.served import Attempt

    balance.balancer().inflight.begin("p/m")
    balance.balancer().turns[(1, "g")] = 5
    history.note([Attempt("p", "m", "ok", 10.0)], 200, 11.0)
    activity.last_outcome["p"] = ("ok", 0.0)
    asyncio.run(budgets.store().seed("gateway:spend:1:day", 7, 60))
    _LEFT_BEHIND["balancer"] = balance.balancer()


def test_process_state_is_reset_before_the_next() -> None:
    import asyncio

    from gateway.dashboard import activity
    from gateway.history import history
    from gateway.keys import budgets
    from routing import balance

    assert _LEFT_BEHIND, "runs after test_process_state_left_by_one_test"
    assert balance.balancer() is not _LEFT_BEHIND["balancer"]
    assert balance.balancer().inflight.mine() == {} and balance.balancer().turns == {}
    assert history.export()["series"] == {}
    assert activity.last_outcome == {} and not activity.recent
    assert asyncio.run(budgets.store().get("gateway:spend:1:day")) is None
