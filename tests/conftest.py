"""Shared fixtures: the test database, the demo model, live daphne-served gateways
(their data dirs copied from templates made once per session: tests/data_templates.py),
their routing (imported from YAML by the project's own import_config), the fake
upstream, Redis."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from .data_templates import TEMPLATES, manage_command
from .routing_spec import routing_document

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def django_db_modify_db_settings(
    django_db_modify_db_settings_parallel_suffix: None, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """On SQLite the test database is a file, in WAL mode (gateway/settings.py's
    init_command), as in production: Django's default in-memory shared-cache
    database fails a reader at once while a thread writes ("database table is
    locked"), where a file waits for the lock as the gateway's threads do."""
    from django.db import connections

    settings = connections["default"].settings_dict
    if settings["ENGINE"] == "django.db.backends.sqlite3":
        settings.setdefault("TEST", {})["NAME"] = str(
            tmp_path_factory.mktemp("database") / "test.sqlite3"
        )


@pytest.fixture(scope="session", autouse=True)
def _data_templates(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Gateway data dirs are copied from templates made once in this session (lazily:
    a run without live gateways makes none)."""
    TEMPLATES.start(tmp_path_factory.mktemp("templates"), server_env)


@pytest.fixture(autouse=True)
def _fresh_routing_snapshot() -> None:
    """Each test's database starts over, so must what this process keeps beside it:
    the cached routing snapshot and keys, rate limits, budget spend, the
    balancer's counts and turns, the breakers, and the dashboard's recent
    requests and hour."""
    from gateway import dashboard
    from gateway.keys import budgets
    from gateway.keys import selectors as keyring
    from gateway.keys.ratelimit import reset_limiter
    from routing import balance, selectors
    from routing.breakers import reset_breakers

    selectors.invalidate()
    keyring.invalidate()
    reset_limiter()
    budgets.reset()
    balance.reset()
    reset_breakers()
    dashboard.reset()


@pytest.fixture(autouse=True)
def _api_keys_optional(settings: Any) -> None:
    """In-process tests call the API without keys unless they turn them on."""
    settings.GATEWAY_REQUIRE_API_KEYS = False


@pytest.fixture(scope="session")
def demo_model_path(_data_templates: None) -> Path:
    """The demo model's folder, built once per session (the live gateways' copies
    come from it too). Read-only: copy it to change anything."""
    return TEMPLATES.demo_model()


def wait_healthy(
    url: str, process: subprocess.Popen[Any], log: Callable[[], str], timeout: float
) -> None:
    """Until the server at `url` answers /health with 200; its log if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited early:\n{log()}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the server did not start:\n{log()}")


def read_timeout(seconds: float) -> httpx.Timeout:
    """A client timeout short on reading only. A test that waits for a read to time
    out must not fail because connecting took longer on a busy machine."""
    return httpx.Timeout(10.0, read=seconds)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    """A daphne process serving the gateway on a loopback port.

    `manage("migrate", "--noinput")` on a new SQLite data dir, then
    `manage("build_demo_model")`, copy the session's templates instead of running
    (the same files, in milliseconds instead of about ten seconds); any other
    command, or a PostgreSQL database, runs for real (data_templates.intercept).
    """

    data_dir: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def prepare(self, *, demo: bool = False) -> None:
        """A migrated database, and with `demo` the demo model built and registered."""
        self.manage("migrate", "--noinput")
        if demo:
            self.manage("build_demo_model")

    def manage(self, *args: str) -> subprocess.CompletedProcess[str]:
        if TEMPLATES.intercept(self.env, self.data_dir, args):
            return subprocess.CompletedProcess(["manage.py", *args], 0, "(from a template)\n", "")
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        )

    def start(self) -> None:
        """Start daphne and wait for /health; a server that never gets healthy is
        stopped (and its log shown) rather than left running."""
        # The child keeps its own descriptor: this process's copy closes at once.
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway.edge.server", "-b", "127.0.0.1", "-p",
                 str(self.port), "gateway.asgi:application"],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            wait_healthy(self.url, self.process, self.log, 60)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM (the gateway drains), SIGKILL after 10 s; reaped either way."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process.wait()

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"daphne-{self.port}.log"

    def log_size(self) -> int:
        """Where the log ends now: `log(since=...)` then reads only what came after
        (a shared gateway's log holds every earlier test's lines)."""
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log(self, since: int = 0) -> str:
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as file:
            file.seek(since)
            return file.read().decode(errors="replace")


def server_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """A gateway process's environment. Client API keys are NOT required by
    default (GATEWAY_REQUIRE_API_KEYS=0), so tests that are not about keys can
    call with any dummy key; pass GATEWAY_REQUIRE_API_KEYS="1" to enforce them.
    `extra` overrides any of these defaults."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.pop("DATABASE_URL", None)
    env["GATEWAY_REQUIRE_API_KEYS"] = "0"
    # Keys made by a test's `manage.py shell` (make_api_keys) are seen by the
    # server's next request, not within the 1 s refresh period: no test waits on
    # that margin. tests/test_api_keys.py sets the period back to check it.
    env["GATEWAY_API_KEYS_REFRESH_SECONDS"] = "0"
    env.update(
        GATEWAY_DATA_DIR=str(data_dir),
        DJANGO_SETTINGS_MODULE="gateway.settings",
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


@pytest.fixture(scope="session")
def live_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data_dir = tmp_path_factory.mktemp("gateway")
    server = LiveServer(data_dir=data_dir, env=server_env(data_dir))
    server.prepare(demo=True)
    server.start()
    yield server
    server.stop()


def configure_routing(server: LiveServer, spec: dict[str, object]) -> None:
    """Create or update local models, providers (with their keys) and mappings in a
    server's database through `manage.py import_config`, as an operator would.

    The spec names model fields flat (`max_retries`, `breaker_fail_max`, ...) and a
    provider's key as `key`; chains as in the YAML (`{"local": name}` or
    `{"provider": name, "model": upstream model}`). Keys travel in environment
    variables, as import_config reads them, never in the file.
    """
    from routing.config_schema import dump_yaml

    document, keys = routing_document(spec)
    path = server.data_dir / f"routing-{time.monotonic_ns()}.yaml"
    path.write_text(dump_yaml(document))
    # --skip-checks: the system checks load every URL and so the whole API, time
    # each call would pay; they run (and are tested) with migrate and serve.
    manage_command({**server.env, **keys}, "import_config", str(path), "--skip-checks")


def run_in_shell(server: LiveServer, script: str, *, doing: str, **payload: object) -> str:
    """Run a script in `manage.py shell` against a server's database, each payload
    item passed as a JSON environment variable; its stdout."""
    import json

    env = {**server.env, **{name: json.dumps(value) for name, value in payload.items()}}
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if result.returncode:
        raise RuntimeError(f"{doing} failed:\n{result.stderr[-3000:]}")
    return result.stdout


def start_together(*servers: LiveServer) -> None:
    """Start gateway processes side by side (each start waits for its /health)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(servers)) as pool:
        for started in [pool.submit(server.start) for server in servers]:
            started.result()


def create_admin(
    server: LiveServer, username: str, password: str, *, exist_ok: bool = False
) -> None:
    """A superuser in a server's database, made as a script would: Django's
    `createsuperuser --noinput` with the password in DJANGO_SUPERUSER_PASSWORD.
    `exist_ok`: a user of that name already there is kept as it is."""
    env = {**server.env, "DJANGO_SUPERUSER_PASSWORD": password}
    try:
        manage_command(env, "createsuperuser", "--noinput", "--skip-checks",
                       "--username", username, "--email", f"{username}@example.com")  # fmt: skip
    except RuntimeError as failed:
        if not (exist_ok and "already taken" in str(failed)):
            raise


# The README's test command installs both (playwright from PyPI, chromium from
# Debian, by .ci/system-deps): a missing browser is a failure, not a skip.
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Debian's chromium through Playwright, started once per module: a test takes a
    fresh context from it (`chromium.new_context()`: no cookies, no cache), which
    costs milliseconds where a browser start costs seconds."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def redis_server(directory: Path) -> Iterator[str]:
    """A private redis-server on a free loopback port (Debian's redis-server package),
    its URL; stopped when the block ends."""
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(directory)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    import redis

    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One Redis server for a module's gateways to share."""
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


_MAKE_KEYS = """
import json, os
from datetime import timedelta
from django.utils import timezone
from django.db import transaction
from gateway.keys.services import create_api_key
made = {}
with transaction.atomic():  # a running server sees all of them or none
    for name, spec in json.loads(os.environ["KEY_SPECS"]).items():
        days = spec.pop("expires_in_days", None)
        enabled = spec.pop("enabled", True)
        expires = timezone.now() + timedelta(days=days) if days is not None else None
        key, secret = create_api_key(name, expires_at=expires, **spec)
        if not enabled:
            key.enabled = False
            key.save()
        made[name] = secret
print("KEYS=" + json.dumps(made))
"""


def make_api_keys(server: LiveServer, specs: dict[str, dict[str, object]]) -> dict[str, str]:
    """Create client API keys in a server's database; their secrets by name.

    A spec takes create_api_key's arguments (allowed_models, requests_per_minute,
    tokens_per_minute), plus `enabled` and `expires_in_days` (negative: expired).
    """
    import json

    stdout = run_in_shell(server, _MAKE_KEYS, KEY_SPECS=specs, doing="creating API keys")
    line = next(x for x in stdout.splitlines() if x.startswith("KEYS="))
    return dict(json.loads(line.removeprefix("KEYS=")))


@contextlib.contextmanager
def fresh_database(name: str) -> Iterator[dict[str, str]]:
    """Server environment for a database of its own: with DATABASE_URL on PostgreSQL
    (CI's second run) a new database on that server, dropped after; else SQLite in
    the server's data dir (the default)."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        yield {}
        return
    import psycopg

    base, _, _ = url.rpartition("/")
    database = f"{name}_{os.getpid()}"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
    try:
        yield {"DATABASE_URL": f"{base}/{database}"}
    finally:
        with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def single_try_provider(key: str, **fields: object) -> dict[str, object]:
    """An OpenAI-kind provider spec for configure_routing that fails at once: no
    retries, and a breaker that never opens, so every request reaches the upstream."""
    return {
        "kind": "openai", "max_retries": 0, "breaker_fail_max": 1000,
        "breaker_reset_timeout": 60.0, "first_byte_timeout": 5.0, "total_timeout": 20.0,
        "key": key, **fields,
    }  # fmt: skip


UPSTREAM_KEYS = ("sk-upstream-test", "sk-ant-upstream-test")


@pytest.fixture(scope="module")
def upstream(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The project's fake upstream, in a thread of this process, for one module's
    tests and gateways. It takes the keys the module lists in `UPSTREAM_KEYS`
    (default: conftest's). Counters and fail rules are the module's: a test that
    counts resets it first (or takes `fresh_upstream`)."""
    keys = getattr(request.module, "UPSTREAM_KEYS", UPSTREAM_KEYS)
    with fake_upstream(*keys) as server:
        yield server


@pytest.fixture
def fresh_upstream(upstream: Any) -> Any:
    """The module's fake upstream with its counters and fail rules reset."""
    upstream.reset()
    return upstream


@contextlib.contextmanager
def fake_upstream(*api_keys: str) -> Iterator[Any]:
    """The project's fake upstream in a thread of this process, taking these keys."""
    from fake_upstream import FakeUpstream

    server = FakeUpstream(api_keys=set(api_keys)).start_in_thread()
    try:
        yield server
    finally:
        server.stop_thread()


@contextlib.contextmanager
def routed_gateway(
    data: Path, spec: dict[str, object], *, demo: bool = False, **env: str
) -> Iterator[LiveServer]:
    """A live gateway with cloud routing on and this routing configuration."""
    server = LiveServer(data_dir=data, env=server_env(data, ENABLE_CLOUD_ROUTING="1", **env))
    server.prepare(demo=demo)
    configure_routing(server, spec)
    server.start()
    try:
        yield server
    finally:
        server.stop()
