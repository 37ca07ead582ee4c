"""One health truth per target: the route tester shows each target's breakers,
what its recent attempts did (from the log, every process) and "never contacted";
a breaker is reset from it, and the reset is in the admin history."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from routing.backends import breaker_settings
from routing.breakers import breakers
from routing.health import recent_attempts
from routing.models import BackendMapping, CloudCredential, LocalModel, MappingTarget, Provider
from routing.resolution import Hop, Target
from routing.route_tester import hop_breakers
from routing.selectors import load_snapshot

from .conftest import fake_upstream, redis_server
from .test_admin import demo  # noqa: F401  (fixture)
from .test_request_log_units import log_row

pytestmark = pytest.mark.django_db
KEY = "sk-health-key-000111222"
TESTER = "/admin/routing/backendmapping/route-tester/?model="


def routed(upstream_url: str, demo_model: LocalModel) -> Provider:
    provider = Provider.objects.create(name="cloud", kind="openai", base_url=f"{upstream_url}/v1")
    credential = CloudCredential(provider=provider)
    credential.set_key(KEY)
    credential.save()
    mapping = BackendMapping.objects.create(pattern="gpt-*")
    MappingTarget.objects.create(mapping=mapping, provider=provider, upstream_model="gpt-4o",
                                 position=0)  # fmt: skip
    MappingTarget.objects.create(mapping=mapping, local_model=demo_model, position=1)
    return provider


def test_recent_attempts_come_from_the_logs_trails() -> None:
    log_row(0, None, attempt_trail="cloud/gpt-4o=503, cloud/gpt-4o=503, local:demo/demo=ok")
    log_row(0, None, attempt_trail="cloud/gpt-4o=skipped (breaker open), local:demo/demo=ok")
    log_row(1, None, attempt_trail="cloud/gpt-4o=ok")  # a day ago: outside the window
    recent = recent_attempts()
    cloud, local = recent["cloud/gpt-4o"], recent["local:demo/demo"]
    assert (cloud.tried, cloud.failures, cloud.outcomes) == (2, 2, ["503", "503"])
    assert cloud.error_rate == 1.0
    assert (local.tried, local.failures) == (2, 0) and local.last_seen is not None


def test_the_route_tester_tells_an_open_breaker_and_resets_it(
    admin_client: Client, settings: Any, demo: LocalModel  # noqa: F811
) -> None:
    from django.contrib.admin.models import LogEntry

    settings.ENABLE_CLOUD_ROUTING = True
    with fake_upstream(KEY) as upstream:
        provider = routed(upstream.url, demo)
        body = admin_client.get(TESTER + "gpt-x").content.decode()
        # Reachable, and no request tried it: not called "healthy".
        assert "never contacted: no request has tried it yet" in body
        assert "models listed, key accepted" in body
        snapshot = load_snapshot()
        hop = Hop(Target("provider", "cloud", "gpt-4o"), "gpt-4o")
        [(name, state), *_] = hop_breakers(hop, snapshot)
        assert state == "closed"
        breakers().breaker(name, breaker_settings(hop, snapshot)).open()
        log_row(0, None, attempt_trail="cloud/gpt-4o=503, local:demo/demo=ok")
        body = admin_client.get(TESTER + "gpt-x").content.decode()
        # The probe still lists models, but requests skip it: the breaker decides.
        assert f"breaker open ({name}): requests skip it" in body
        assert "models listed, key accepted" in body and "1 of 1 failed" in body
        # Per deployment: the provider + upstream model's breaker, and the provider's own.
        assert name == "cloud/gpt-4o"
        assert 'data-breaker="cloud/gpt-4o"' in body and 'data-breaker="cloud"' in body
        response = admin_client.post(
            "/admin/routing/backendmapping/route-tester/reset-breaker/",
            {"breaker": name, "model": "gpt-x", "position": "0"},
            follow=True,
        )
        assert f"Breaker {name} reset (it was open)." in response.content.decode()
        assert breakers().state(name, breaker_settings(hop, snapshot)) == "closed"
        [entry] = LogEntry.objects.filter(object_id=str(provider.pk))
        assert f"Reset the circuit breaker {name} (was open)." in entry.get_change_message()
        history = admin_client.get(f"/admin/routing/provider/{provider.pk}/history/")
        assert "Reset the circuit breaker" in history.content.decode()
    bad = admin_client.post("/admin/routing/backendmapping/route-tester/reset-breaker/",
                            {"breaker": "other", "model": "gpt-x", "position": "0"})  # fmt: skip
    assert bad.status_code == 404
    reset_url = "/admin/routing/backendmapping/route-tester/reset-breaker/"
    assert admin_client.get(reset_url).status_code == 405


async def test_a_reset_reaches_every_process_through_redis(tmp_path: Any) -> None:
    from routing.breakers import Breakers, BreakerSettings

    config = BreakerSettings(fail_max=2, reset_timeout=600.0)
    with redis_server(tmp_path) as url:
        here, there = Breakers(url), Breakers(url)  # two gateway processes
        for _ in range(2):
            assert await here.admit("cloud/gpt-4o", config) is not None
            await here.record("cloud/gpt-4o", config, ok=False)
        assert there.state("cloud/gpt-4o", config) == "open"
        assert await there.admit("cloud/gpt-4o", config) is None  # skipped everywhere
        here.reset("cloud/gpt-4o", config)
        assert there.state("cloud/gpt-4o", config) == "closed"
        admission = await there.admit("cloud/gpt-4o", config)
        assert admission is not None and not admission.probe  # closed: a plain pass
        # Its count started again: one failure does not reopen it.
        await there.record("cloud/gpt-4o", config, ok=False)
        assert here.state("cloud/gpt-4o", config) == "closed"
