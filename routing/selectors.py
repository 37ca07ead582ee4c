"""Reads of the routing configuration (HackSoft style: selectors read, services write)."""

from __future__ import annotations

from .models import LocalModel


async def enabled_local_models() -> list[LocalModel]:
    return [m async for m in LocalModel.objects.filter(enabled=True).order_by("name")]


async def get_enabled_local_model(name: str) -> LocalModel | None:
    return await LocalModel.objects.filter(name=name, enabled=True).afirst()
