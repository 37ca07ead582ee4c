"""Shared fixtures: the demo model, and a live daphne-served gateway."""

from __future__ import annotations

import contextlib
import os
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

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _fresh_routing_snapshot() -> None:
    """Each test's database starts over, so must the cached routing snapshot and keys."""
    from gateway.ratelimit import reset_limiter
    from routing import selectors, selectors_keys

    selectors.invalidate()
    selectors_keys.invalidate()
    reset_limiter()


@pytest.fixture(autouse=True)
def _api_keys_optional(settings: Any) -> None:
    """In-process tests call the API without keys unless they turn them on."""
    settings.GATEWAY_REQUIRE_API_KEYS = False


@pytest.fixture(scope="session")
def demo_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from inference.demo_model import build_demo_model

    return build_demo_model(tmp_path_factory.mktemp("models") / "demo", seed=0)


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    """A daphne process serving the gateway on a loopback port."""

    data_dir: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def manage(self, *args: str) -> subprocess.CompletedProcess[str]:
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
        log = open(self.data_dir / f"daphne-{self.port}.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port),
             "gateway.asgi:application"],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_healthy(self.url, self.process, self.log, 60)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def log(self) -> str:
        path = self.data_dir / f"daphne-{self.port}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def server_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """A gateway process's environment. Client API keys are NOT required by
    default (GATEWAY_REQUIRE_API_KEYS=0), so tests that are not about keys can
    call with any dummy key; pass GATEWAY_REQUIRE_API_KEYS="1" to enforce them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.pop("DATABASE_URL", None)
    env["GATEWAY_REQUIRE_API_KEYS"] = "0"
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
    server.manage("migrate", "--noinput")
    server.manage("build_demo_model")
    server.start()
    yield server
    server.stop()


_APPLY_SPEC = """
import json, os
from routing.models import BackendMapping, CloudCredential, LocalModel, MappingTarget, Provider
spec = json.loads(os.environ["ROUTING_SPEC"])
for p in spec.get("providers", []):
    key = p.pop("key", None)
    provider, _ = Provider.objects.update_or_create(name=p.pop("name"), defaults=p)
    if key:
        cred = CloudCredential.objects.filter(provider=provider).first()
        cred = cred or CloudCredential(provider=provider)
        cred.set_key(key)
        cred.save()
for m in spec.get("local_models", []):
    LocalModel.objects.update_or_create(name=m.pop("name"), defaults=m)
for m in spec.get("mappings", []):
    mapping, _ = BackendMapping.objects.update_or_create(
        pattern=m["pattern"], defaults={"priority": m.get("priority", 0)})
    mapping.targets.all().delete()
    for i, t in enumerate(m["chain"]):
        if "local" in t:
            MappingTarget.objects.create(mapping=mapping, position=i,
                local_model=LocalModel.objects.get(name=t["local"]))
        else:
            MappingTarget.objects.create(mapping=mapping, position=i,
                provider=Provider.objects.get(name=t["provider"]),
                upstream_model=t.get("model", ""))
"""


def configure_routing(server: LiveServer, spec: dict[str, object]) -> None:
    """Create providers, keys and mappings in a server's database (another process)."""
    run_in_shell(server, _APPLY_SPEC, ROUTING_SPEC=spec, doing="configuring routing")


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
from routing.services_keys import create_api_key
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


@contextlib.contextmanager
def fake_upstream(*api_keys: str) -> Iterator[Any]:
    """The project's fake upstream in a thread of this process, taking these keys."""
    from inference.fake_upstream import FakeUpstream

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
    server.manage("migrate", "--noinput")
    if demo:
        server.manage("build_demo_model")
    configure_routing(server, spec)
    server.start()
    try:
        yield server
    finally:
        server.stop()
