"""Where the wire formats and the fake upstream live, held by their imports: each
wire protocol's package sits below the gateway and the cloud clients that use
it, and the fake upstream is a test tool outside the installed packages that
shares no code with what it tests."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parent.parent


def imports(package: str) -> dict[str, set[str]]:
    """Module path -> the absolute names it imports (relative ones resolved)."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = parts[: len(parts) - node.level + (path.name == "__init__.py")]
                    module = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    module = node.module or ""
                names.add(module)
                names.update(f"{module}.{alias.name}" for alias in node.names)
        found[str(path.relative_to(ROOT))] = names
    return found


def offenders(package: str, *forbidden: str) -> list[str]:
    return [
        f"{module} imports {name}"
        for module, names in imports(package).items()
        for name in sorted(names)
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    ]


def test_the_fake_upstream_is_not_an_installed_package() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    installed = find_packages(str(ROOT), include=include)
    assert "inference.wire.openai" in installed and "inference.wire.anthropic" in installed
    assert not [p for p in installed if "fake_upstream" in p]
    assert not list((ROOT / "inference").glob("fake_upstream/*.py"))  # __pycache__ may stay


def test_the_fake_upstream_shares_no_code_with_the_gateway() -> None:
    assert offenders("fake_upstream", "gateway", "routing", "inference") == []
    for package in ("gateway", "routing", "inference"):
        assert offenders(package, "fake_upstream") == []


def test_wire_packages_sit_below_their_users() -> None:
    # The cloud clients use the wire packages: importing them back, or the
    # layers above, would make a cycle.
    assert offenders("inference/wire", "gateway", "routing", "inference.cloud") == []


def test_views_and_cloud_clients_take_protocols_from_the_wire_packages() -> None:
    # No view reaches into a sibling view for protocol helpers.
    for view in ("openai", "anthropic", "models"):
        names = imports("gateway/api")[f"gateway/api/{view}.py"]
        assert not {n for n in names if n.startswith("gateway.api.") and
                    n.split(".")[2] in ("openai", "anthropic")}, view  # fmt: skip
    cloud = imports("inference/cloud")
    assert "inference.wire.openai" in cloud["inference/cloud/openai.py"]
    assert "inference.wire.anthropic" in cloud["inference/cloud/anthropic.py"]
