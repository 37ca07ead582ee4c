"""The framework interfaces the gateway leans on (docs/design.md, "Framework hooks").

One private hook is kept, daphne's `Server.http_factory`; a test here fails,
naming it, when a daphne release changes it. The public-but-undocumented names
the API application uses (Django's `ASGIRequest`, `convert_exception_to_response`,
`log_response`)
and Twisted's `parsePOSTFormSubmission` are checked the same way, so an upgrade
says what to look at instead of failing somewhere downstream. And the process's
start-up is explicit: importing the application starts nothing.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import daphne.server  # first: it installs the asyncio reactor the guard's timers use
import django.core.handlers.asgi
import django.core.handlers.exception
import django.utils.log
import pytest
from daphne.http_protocol import WebRequest
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.web import http

from gateway.edge.guard import Guard, Limits

from .conftest import ROOT, server_env

SEE = "see docs/design.md#framework-hooks"


def test_daphne_server_still_assigns_the_http_factory_the_guard_wraps() -> None:
    source = inspect.getsource(daphne.server.Server.run)
    assert "self.http_factory = HTTPFactory(self)" in source, (
        f"daphne.server.Server.run no longer assigns self.http_factory, the private hook "
        f"gateway.edge.server.GuardedServer wraps: {SEE}"
    )
    assert "listen(self.http_factory)" in source, (
        f"daphne.server.Server.run no longer listens with self.http_factory: {SEE}"
    )


def test_djangos_asgi_request_still_takes_a_scope_and_a_body_file() -> None:
    parameters = list(inspect.signature(django.core.handlers.asgi.ASGIRequest).parameters)
    assert parameters == ["scope", "body_file"], (
        f"django.core.handlers.asgi.ASGIRequest(scope, body_file) changed to {parameters}: "
        f"gateway.handlers builds the API's requests with it: {SEE}"
    )


def test_djangos_middleware_exception_wrapper_still_takes_get_response() -> None:
    wrap = django.core.handlers.exception.convert_exception_to_response
    parameters = list(inspect.signature(wrap).parameters)
    assert parameters == ["get_response"], (
        f"django.core.handlers.exception.convert_exception_to_response changed to "
        f"{parameters}: gateway.handlers.build_chain wraps the API's middleware with it: {SEE}"
    )


def test_djangos_request_logging_still_takes_the_response_and_request() -> None:
    parameters = inspect.signature(django.utils.log.log_response).parameters
    assert {"response", "request"} <= set(parameters), (
        f"django.utils.log.log_response changed: gateway.handlers logs the API's 4xx/5xx "
        f"to django.request with it, as Django's handler does: {SEE}"
    )


def test_twisted_requests_still_take_parse_post_form_submission() -> None:
    parameters = inspect.signature(http.Request.__init__).parameters
    assert "parsePOSTFormSubmission" in parameters, (
        f"twisted.web.http.Request lost parsePOSTFormSubmission, which the edge guard's "
        f"requests turn off: {SEE}"
    )
    kinds = {p.kind for p in inspect.signature(WebRequest.__init__).parameters.values()}
    assert inspect.Parameter.VAR_KEYWORD in kinds, f"daphne's WebRequest drops keywords: {SEE}"


class _TcpTransport(StringTransport):
    """A TCP transport as Twisted's ITCPTransport describes it, recording Nagle's switch."""

    no_delay = False

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.no_delay = enabled

    def getTcpNoDelay(self) -> bool:
        return self.no_delay


def test_the_guard_turns_nagle_off_on_each_connection() -> None:
    limits = Limits(1 << 20, 5.0, 5.0, 5.0, 16384, 100, 10)
    guard = Guard(Factory.forProtocol(Protocol), limits)
    connection: Any = guard.buildProtocol(None)
    transport = _TcpTransport()
    connection.makeConnection(transport)
    try:
        assert transport.no_delay is True
    finally:
        connection.connectionLost(None)


_PROBE = """
import gc, json, threading
import gateway.application
from gateway import startup
def state():
    return {"started": startup._started, "frozen": gc.get_freeze_count(),
            "threads": sorted(t.name for t in threading.enumerate())}
steps = {"import gateway.application": state()}
%s
print(json.dumps(steps))
"""


def _probe(tmp_path: Path, then: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE % then],
        cwd=ROOT, env=server_env(tmp_path), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "entry",
    [
        "import gateway.asgi",  # bare daphne's entry point
        "startup.start(); startup.start()",  # gateway.edge.server's, run twice: once
    ],
)
def test_importing_the_application_starts_nothing_an_entry_point_starts_it(
    tmp_path: Path, entry: str
) -> None:
    steps = _probe(tmp_path, f'{entry}\nsteps["then"] = state()')
    imported, started = steps["import gateway.application"], steps["then"]
    assert imported["started"] is False
    assert imported["frozen"] == 0  # gc.freeze() is start-up work
    assert started["started"] is True
    assert started["frozen"] > 0
    assert len(started["threads"]) > len(imported["threads"])  # the request log's writer
