"""The runtime cloud-routing switch reaches a running gateway process: set in
another process (as the admin does), it takes effect within the routing refresh."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from .conftest import LiveServer, configure_routing, run_in_shell, server_env

pytestmark = pytest.mark.e2e

_SWITCH = """
import json, os
from routing.models import RoutingSwitch
on = json.loads(os.environ["ON"])
RoutingSwitch.objects.update_or_create(pk=1, defaults={"cloud_routing": on})
"""


def status_of(server: LiveServer, model: str) -> int:
    body = {"model": model, "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]}
    return httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60).status_code


def wait_for_status(server: LiveServer, model: str, status: int, within: float = 30) -> float:
    started = time.monotonic()
    while (seen := status_of(server, model)) != status:
        assert time.monotonic() - started < within, f"still {seen}"
        time.sleep(0.1)  # a polling interval, not a guess at how long it takes
    return time.monotonic() - started


def test_the_switch_reaches_a_running_gateway(tmp_path: Path) -> None:
    server = LiveServer(data_dir=tmp_path, env=server_env(tmp_path, ENABLE_CLOUD_ROUTING="0"))
    server.prepare(demo=True)
    configure_routing(server, {"mappings": [{"pattern": "gpt-*", "chain": [{"local": "demo"}]}]})
    server.start()
    try:
        assert status_of(server, "gpt-switch") == 404  # ENABLE_CLOUD_ROUTING=0: no mappings
        run_in_shell(server, _SWITCH, ON=True, doing="switching cloud routing on")
        wait_for_status(server, "gpt-switch", 200)
        run_in_shell(server, _SWITCH, ON=False, doing="switching cloud routing off")
        wait_for_status(server, "gpt-switch", 404)
    finally:
        server.stop()
