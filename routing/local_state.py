"""A local model's state as this process sees it: on disk, loading, loaded, failed.

The engine is per process, so "loaded" and "failed" describe the process that
serves the page (the admin runs inside the gateway); "on disk" is the folder.
"""

from __future__ import annotations

from dataclasses import dataclass

from .backends import get_engine
from .models import LocalModel


@dataclass(frozen=True, slots=True)
class LocalState:
    label: str  # "loaded", "loading", "failed: ...", "on disk", "folder missing"
    usable: bool  # can serve (or load to serve) a request now


def has_model_folder(model: LocalModel) -> bool:
    return (model.resolved_path / "config.json").is_file()


def local_state(model: LocalModel) -> LocalState:
    stats = get_engine().stats()
    if model.name in stats.resident_models:
        return LocalState("loaded", True)
    if model.name in stats.loading_models:
        return LocalState("loading", True)
    on_disk = has_model_folder(model)
    failure = stats.failed_models.get(model.name)
    if failure is not None:
        return LocalState(f"failed: {failure}", on_disk)
    return LocalState("on disk" if on_disk else "folder missing", on_disk)
