"""The README's start command, and models preloaded at start."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from routing.backends import get_engine, preload_local_models
from routing.models import LocalModel

from .conftest import ROOT, server_env
from .data_templates import TEMPLATES


def test_serve_prepares_a_fresh_data_dir(tmp_path: Path) -> None:
    env = server_env(tmp_path)
    result = subprocess.run(
        [sys.executable, "manage.py", "serve", "--dry-run", "--port", "8123"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    out = result.stdout
    assert "building the demo model" in out
    assert "curl http://127.0.0.1:8123/v1/chat/completions" in out
    assert 'OpenAI(base_url="http://127.0.0.1:8123/v1"' in out
    assert (tmp_path / "models" / "demo" / "config.json").is_file()
    assert (tmp_path / "gateway.sqlite3").is_file()
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0  # private to the owner
    again = subprocess.run(
        [sys.executable, "manage.py", "serve", "--dry-run"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    assert "building the demo model" not in again.stdout  # built once, kept


@pytest.mark.django_db
def test_preload_loads_at_start(demo_model_path: Path) -> None:
    LocalModel.objects.create(name="eager", path=str(demo_model_path), preload=True)
    LocalModel.objects.create(name="lazy", path=str(demo_model_path))
    preload_local_models()

    async def wait() -> list[str]:
        for _ in range(200):
            stats = get_engine().stats()
            if "eager" in stats.resident_models:
                break
            await asyncio.sleep(0.02)
        return get_engine().stats().resident_models

    resident = asyncio.run(wait())
    assert "eager" in resident
    assert "lazy" not in resident


@pytest.mark.e2e
def test_serve_starts_a_gateway_that_answers_with_the_printed_key(tmp_path: Path) -> None:
    """The README's start command, for real: a first run, keys required, the
    printed key and SDK line work, and Ctrl-C / SIGTERM stops it cleanly."""
    import re
    import signal

    import openai

    from .conftest import free_port, wait_healthy

    port = free_port()
    env = server_env(tmp_path, GATEWAY_REQUIRE_API_KEYS="1")
    # Migrated, with the demo model, as the test above shows serve leaves a data
    # dir (copied: seconds sooner); the first-run key is still this serve's.
    TEMPLATES.copy("demo", tmp_path)
    log = open(tmp_path / "serve.log", "w+")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--port", str(port)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip

    def log_text() -> str:
        return (tmp_path / "serve.log").read_text()

    try:
        wait_healthy(f"http://127.0.0.1:{port}", process, log_text, 120)
        printed = (tmp_path / "serve.log").read_text()
        key = re.search(r'api_key="(gw-[A-Za-z0-9_-]{43})"', printed)
        assert key is not None, printed
        sdk = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key.group(1))
        reply = sdk.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "Hello"}], max_tokens=4
        )
        assert reply.model == "demo" and reply.usage is not None
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="wrong").models.list()
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
        log.close()
    assert code == 0, (tmp_path / "serve.log").read_text()[-2000:]
