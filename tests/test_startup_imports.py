"""Django's start-up imports no MLX (issue 12, point 2).

MLX, mlx-lm and transformers cost about two seconds to import; every management
command and the admin process would pay it. They are imported only where a
model is loaded or a prompt is tokenized. Each check runs in a fresh
interpreter: the test process itself has long since imported everything.
(How long start-up takes is measured by benchmarks/bench_startup.py, not here.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT, server_env

HEAVY = ("mlx", "mlx_lm", "transformers")

_PROBE = """
import json, sys
import django
django.setup()
steps = {}

def note(step):
    steps[step] = sorted(m for m in sys.modules if m.split(".")[0] in %(heavy)r)

note("django.setup()")
from django.urls import get_resolver, resolve
get_resolver().url_patterns  # the whole URLconf: API routers, admin, dashboard
resolve("/v1/chat/completions")
resolve("/v1/messages")
note("the URLconf")
from django.contrib import admin
admin.site.get_urls()
for model, model_admin in admin.site._registry.items():
    model_admin.get_urls()
note("the admin")
from django.core.management import get_commands, load_command_class
for name, app in get_commands().items():
    load_command_class(app, name)
note("every management command's module")
import gateway.application
note("the ASGI application, built")
%(extra)s
print(json.dumps(steps))
"""


def _probe(tmp_path: Path, extra: str = "") -> dict[str, list[str]]:
    script = _PROBE % {"heavy": HEAVY, "extra": extra}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT, env=server_env(tmp_path), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_django_setup_urlconf_admin_and_commands_import_no_mlx(tmp_path: Path) -> None:
    steps = _probe(tmp_path)
    assert list(steps) == [
        "django.setup()",
        "the URLconf",
        "the admin",
        "every management command's module",
        "the ASGI application, built",
    ]
    for step, heavy in steps.items():
        assert heavy == [], f"{step} imported {heavy[:5]}: MLX belongs where a model is loaded"


@pytest.mark.parametrize("module", ["mlx.core", "mlx_lm", "transformers"])
def test_the_probe_sees_an_mlx_import(tmp_path: Path, module: str) -> None:
    # The check above would pass vacuously if the probe could not see one.
    steps = _probe(tmp_path, extra=f"import {module}\nnote('import {module}')")
    assert module.split(".")[0] in {m.split(".")[0] for m in steps[f"import {module}"]}
