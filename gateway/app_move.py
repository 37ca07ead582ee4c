"""What a migration that moves models from one app to another runs besides the move:
the models' ContentType rows follow them, so the permissions granted on them and
the admin's history of their rows (both keyed by content type) stay theirs.

Used by the migrations that moved client keys and the request log out of the
routing app (gateway/keys, gateway/usage); those migrations depend on it, so
its behaviour must stay as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from django.db import migrations

Step = Callable[[Any, Any], None]


def _relabel(source: str, target: str, models: Sequence[str]) -> Step:
    def run(apps: Any, schema_editor: Any) -> None:
        content_type = apps.get_model("contenttypes", "ContentType")
        rows = content_type.objects.using(schema_editor.connection.alias)
        for model in models:
            # A row already under the target label (made by a migrate run that
            # saw the new app first) wins; the old one is then left as it was.
            if not rows.filter(app_label=target, model=model).exists():
                rows.filter(app_label=source, model=model).update(app_label=target)

    return run


def move_content_types(source: str, target: str, models: Sequence[str]) -> migrations.RunPython:
    """A reversible operation giving `models` (lower-case names) the app label `target`."""
    return migrations.RunPython(
        _relabel(source, target, models), _relabel(target, source, models), elidable=False
    )
