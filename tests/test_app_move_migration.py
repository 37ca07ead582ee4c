"""A database made by the migrations from before the keys/usage apps existed moves to
them without losing a row (issue 12, point 1), on SQLite and PostgreSQL alike.

The test walks the real migration graph: back to routing 0015 (the last layout
where the routing app held keys and the request log), rows written there
through that state's historical models, then forward to today's leaves. Then
every row is read back through the code that uses it: the key authenticates
through `gateway.keys.auth`, its log rows follow its foreign key, the usage page
and the budget read the rollup, and permissions and the admin's history of the
key (keyed by content type) still reach it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.apps.registry import Apps
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import Permission, User
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client, RequestFactory

from gateway.context import RequestContext
from gateway.keys import auth, budgets
from gateway.keys import selectors as keyring
from gateway.keys.models import ApiKey, ApiKeyState
from gateway.usage import selectors as usage
from gateway.usage.models import ANONYMOUS_KEY, RequestLog, UsageDay
from gateway.usage.services import write_request_logs

pytestmark = pytest.mark.django_db(transaction=True)

OLD_LEAF = ("routing", "0015_model_server_provider_kind")
# Back to the old layout: routing at 0015, the new apps not there at all.
BEFORE = [OLD_LEAF, ("keys", None), ("usage", None)]
SECRET = "gw-" + "x" * 43
NOW = datetime.now(UTC).replace(microsecond=0)


def migrate(targets: list[tuple[str, str | None]] | None = None) -> Apps:
    """Migrate the test database to `targets` (None: the leaves); the state's apps."""
    executor = MigrationExecutor(connection)
    plan_to = targets or executor.loader.graph.leaf_nodes()
    executor.migrate(plan_to)
    ContentType.objects.clear_cache()
    return executor.loader.project_state([OLD_LEAF] if targets else plan_to).apps


@pytest.fixture
def old_database() -> Iterator[Apps]:
    """The database at routing 0015; at the leaves again afterwards, whatever happens."""
    try:
        yield migrate(BEFORE)
    finally:
        migrate()


def fill(old: Apps) -> dict[str, Any]:
    """Rows as the routing app held them, written through its historical models."""
    key = old.get_model("routing", "ApiKey").objects.create(
        name="ci",
        prefix=SECRET[:11],
        key_hash=hashlib.sha256(SECRET.encode()).hexdigest(),
        allowed_models=["demo*"],
        requests_per_minute=60,
        budget_per_day=Decimal("5.00"),
    )
    old.get_model("routing", "ApiKeyState").objects.create(pk=1, version=7)
    log = old.get_model("routing", "RequestLog")
    common = {"protocol": "openai", "endpoint": "chat.completions", "backend": "local"}
    log.objects.create(
        created_at=NOW, api_key=key, requested_model="demo-1", status=200, input_tokens=10,
        output_tokens=5, cost=Decimal("1.25"), latency_ms=12.5, attempt_trail="local=ok",
        **common,
    )  # fmt: skip
    log.objects.create(
        created_at=NOW - timedelta(minutes=1), requested_model="demo-1", status=500,
        error_type="server_error", latency_ms=3.0, **common,
    )  # fmt: skip
    usage_day = old.get_model("routing", "UsageDay")
    usage_day.objects.create(
        day=NOW.date(), key_id=key.pk, model="demo-1", requests=1, input_tokens=10,
        output_tokens=5, cost=Decimal("1.25"),
    )  # fmt: skip
    usage_day.objects.create(
        day=NOW.date(), key_id=ANONYMOUS_KEY, model="demo-1", requests=1, errors=1
    )
    # Permissions and the admin's history name the key by its content type,
    # which at this point is the routing app's.
    key_type = ContentType.objects.get(app_label="routing", model="apikey")
    clerk = User.objects.create_user("clerk", password="pw", is_staff=True)
    viewer = Permission.objects.get(content_type=key_type, codename="view_apikey")
    clerk.user_permissions.add(viewer)
    entry = LogEntry.objects.create(
        user=clerk, content_type=key_type, object_id=str(key.pk), object_repr="ci",
        action_flag=CHANGE, change_message="Raised the limit.",
    )  # fmt: skip
    return {"key_id": key.pk, "key_type": key_type.pk, "entry": entry.pk, "clerk": clerk.pk}


def test_the_migrations_hold_the_old_layout(old_database: Apps) -> None:
    """The starting point is what it claims: keys and the log are the routing app's."""
    assert old_database.get_model("routing", "ApiKey")._meta.db_table == "routing_apikey"
    assert not ContentType.objects.filter(app_label__in=["keys", "usage"]).exists()
    assert ContentType.objects.filter(app_label="routing", model="requestlog").exists()


def test_keys_and_log_rows_survive_the_move(old_database: Apps, admin_client: Client) -> None:
    made = fill(old_database)
    migrate()

    # Every row is there, with its values.
    key = ApiKey.objects.get()
    assert (key.pk, key.name, key.allowed_models) == (made["key_id"], "ci", ["demo*"])
    assert (key.requests_per_minute, key.budget_per_day) == (60, Decimal("5.00"))
    assert ApiKeyState.current() == 7
    assert RequestLog.objects.count() == 2 and UsageDay.objects.count() == 2

    # The key still authenticates, through the request path's own check.
    keyring.invalidate()
    ctx = RequestContext(protocol="openai", endpoint="chat.completions")
    request = RequestFactory().post("/v1/chat/completions", headers={"x-api-key": SECRET})
    async_to_sync(auth.authenticate)(request, ctx)
    assert ctx.api_key is not None and ctx.api_key.id == key.pk
    assert ctx.api_key.allows("demo-1") and not ctx.api_key.allows("gpt-4o")

    # The log's foreign key still joins both ways.
    answered = RequestLog.objects.get(status=200)
    assert answered.api_key == key and list(key.requests.all()) == [answered]
    assert RequestLog.objects.get(status=500).api_key is None

    # The rollup: read by the usage page's query and the key's budget.
    today = NOW.date()
    rows = {(r.key, r.requests, r.errors) for r in usage.usage_by_key_and_model(today, today)}
    assert rows == {(f"ci ({key.prefix}…)", 1, 0), ("(no key)", 1, 1)}
    assert budgets.logged_spend(key.pk, NOW.date()) == 1_250_000

    # The admin shows them at the new apps' addresses.
    log = "/admin/usage/requestlog/"
    listing = admin_client.get(log).content.decode()
    assert all(f"{log}{row.pk}/change/" in listing for row in RequestLog.objects.all())
    row_page = admin_client.get(f"{log}{answered.pk}/change/").content.decode()
    assert f"/admin/keys/apikey/{key.pk}/change/" in row_page
    page = admin_client.get("/admin/usage/requestlog/usage/?days=7").content.decode()
    assert "ci (" in page and "(no key)" in page

    # The content type moved with the model (same row), so what hangs on it follows.
    key_type = ContentType.objects.get_for_model(ApiKey)
    assert (key_type.pk, key_type.app_label) == (made["key_type"], "keys")
    assert not ContentType.objects.filter(app_label="routing", model__in=["apikey", "requestlog"])
    assert User.objects.get(pk=made["clerk"]).has_perm("keys.view_apikey")
    assert LogEntry.objects.get(pk=made["entry"]).get_edited_object() == key
    history = admin_client.get(f"/admin/keys/apikey/{key.pk}/history/").content.decode()
    assert "Raised the limit." in history

    # And the writer goes on adding to the moved tables: a new row, the day's total grows.
    write_request_logs([{
        "created_at": NOW, "api_key_id": key.pk, "protocol": "openai", "requested_model": "demo-1",
        "endpoint": "chat.completions", "mapping": "", "status": 200, "cost": Decimal("0.5"),
        "latency_ms": 1.0,
    }])  # fmt: skip
    assert key.requests.count() == 2
    assert UsageDay.objects.get(key_id=key.pk).requests == 2


def test_the_move_goes_back_too(old_database: Apps) -> None:
    """Unapplying the move (an operator rolling back a deploy) keeps every row."""
    made = fill(old_database)
    migrate()
    old = migrate(BEFORE)
    assert old.get_model("routing", "ApiKey").objects.get().pk == made["key_id"]
    assert old.get_model("routing", "RequestLog").objects.count() == 2
    assert ContentType.objects.get(pk=made["key_type"]).app_label == "routing"
