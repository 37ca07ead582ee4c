"""Any key change drops every process's cached keyring (the stamp they watch)."""

from __future__ import annotations

from django.db.models.signals import post_delete, post_save

from routing.signals import on_change

from . import selectors, services
from .models import ApiKey

_key_changed = on_change(selectors.invalidate, services.keys_changed)


def connect() -> None:
    post_save.connect(_key_changed, sender=ApiKey, dispatch_uid="keys-save")
    post_delete.connect(_key_changed, sender=ApiKey, dispatch_uid="keys-del")
