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
