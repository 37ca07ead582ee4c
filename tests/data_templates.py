"""Gateway data dirs prepared once per test session and copied.

Preparing a data dir the long way costs a process per step (migrate, then
build_demo_model, about 5 s each on the 2-core development machine). A session
makes each kind once, with the real commands, and every gateway after that gets
a copy: a migrated SQLite database, and, with the demo model, the database as
`build_demo_model` leaves it and the model's folder. The demo model's weights
are built once per session and shared with the in-process tests.
"""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATABASE = "gateway.sqlite3"  # in the data dir: gateway/settings.py's default
KINDS = ("migrated", "demo")

# What build_demo_model registers once the folder is written, said in the
# project's own configuration format.
_DEMO_YAML = "version: 1\nlocal_models:\n  - {name: demo, path: demo}\n"


def manage_command(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`manage.py ARGS` in another process; its output in the error if it fails."""
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if result.returncode:
        raise RuntimeError(
            f"manage.py {' '.join(args)} exited {result.returncode}:\n"
            f"{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        )
    return result


class DataTemplates:
    """Template data dirs under `root` (one per session), each made on first use.

    Until `start` is called (outside pytest) there is no root: `copy` answers
    False and callers run the real commands.
    """

    def __init__(self) -> None:
        self.root: Path | None = None
        self._env_for: Callable[[Path], dict[str, str]] | None = None
        self._lock = threading.RLock()
        self._model: Path | None = None

    def start(self, root: Path, env_for: Callable[[Path], dict[str, str]]) -> None:
        """Use `root` for this session; `env_for(data_dir)` is a gateway's environment."""
        self.root, self._env_for, self._model = root, env_for, None

    def demo_model(self) -> Path:
        """The demo model's folder (seed 0 and the command's defaults), built once."""
        if self.root is None:
            raise RuntimeError("no session: DataTemplates.start was not called")
        with self._lock:
            if self._model is None:
                from inference.demo_model import build_demo_model

                self._model = build_demo_model(self.root / "model" / "demo", seed=0)
            return self._model

    def path(self, kind: str) -> Path | None:
        """The template data dir of a kind; None without a session."""
        if kind not in KINDS:
            raise ValueError(f"unknown template {kind!r}")
        if self.root is None or self._env_for is None:
            return None
        with self._lock:
            target = self.root / kind
            if not (target / DATABASE).exists():
                self._make(kind, target)
            return target

    def _make(self, kind: str, target: Path) -> None:
        assert self.root is not None and self._env_for is not None
        staging = self.root / f"{kind}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        env = self._env_for(staging)
        if kind == "migrated":
            manage_command(env, "migrate", "--noinput")
        else:
            base = self.path("migrated")
            assert base is not None
            shutil.copy2(base / DATABASE, staging / DATABASE)
            shutil.copytree(self.demo_model(), staging / "models" / "demo")
            config = self.root / "demo.yaml"
            config.write_text(_DEMO_YAML)
            manage_command(env, "import_config", str(config), "--skip-checks")
        for name in ("secret_key", "fernet_key"):  # each gateway makes its own
            (staging / name).unlink(missing_ok=True)
        staging.rename(target)

    def copy(self, kind: str, data_dir: Path) -> bool:
        """Put a template's database (and models) into a data dir; False without a session."""
        template = self.path(kind)
        if template is None:
            return False
        data_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(template / DATABASE, data_dir / DATABASE)
        if (template / "models").is_dir():
            shutil.copytree(template / "models", data_dir / "models", dirs_exist_ok=True)
        return True

    def holds(self, kind: str, data_dir: Path) -> bool:
        """Whether a data dir's database is still exactly the template's: nothing
        written since it was copied, no write-ahead log pending."""
        if self.root is None:
            return False
        template = self.path(kind)
        database = data_dir / DATABASE
        return (
            template is not None
            and database.exists()
            and not Path(f"{database}-wal").exists()
            and filecmp.cmp(template / DATABASE, database, shallow=False)
        )

    def intercept(self, env: dict[str, str], data_dir: Path, args: tuple[str, ...]) -> bool:
        """Do what `manage.py ARGS` would do to a fresh data dir by copying a
        template; False (run the command) for anything else: other commands or
        options, a database that is not the data dir's SQLite file, a models dir
        elsewhere, a database that already changed."""
        if "DATABASE_URL" in env or "GATEWAY_MODELS_DIR" in env:
            return False
        data = Path(env.get("GATEWAY_DATA_DIR", data_dir))
        if args == ("migrate", "--noinput") and not (data / DATABASE).exists():
            return self.copy("migrated", data)
        if (
            args == ("build_demo_model",)
            and not (data / "models" / "demo").exists()
            and self.holds("migrated", data)
        ):
            return self.copy("demo", data)
        return False


TEMPLATES = DataTemplates()
