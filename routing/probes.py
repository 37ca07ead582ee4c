"""Health probes shared by the `healthcheck` command, the admin and the route tester."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx
from asgiref.sync import sync_to_async

from inference.errors import GatewayError
from inference.local.model import load_model

from .models import LocalModel, Provider
from .provider_config import provider_config


@dataclass(frozen=True, slots=True)
class ProbeResult:
    name: str
    kind: str  # "database", "local", "openai" or "anthropic"
    ok: bool
    latency_ms: float
    status: int | None = None
    error: str = ""


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def probe_provider(
    provider: Provider, limit: float = 5.0, api_key: str | None = None
) -> ProbeResult:
    """A real, minimal, free call: list the provider's models with its key
    (or with `api_key`, typed in a form and not saved yet).

    Never longer than `limit` in all (httpx's timeouts are per phase: a server
    that trickles bytes could hold it far longer), and never an exception: a
    broken provider is one failed result, not a broken page or command.
    """
    started = time.perf_counter()

    def result(ok: bool, status: int | None = None, error: str = "") -> ProbeResult:
        elapsed = (time.perf_counter() - started) * 1000
        return ProbeResult(provider.name, provider.kind, ok, elapsed, status, error)

    try:
        config = await sync_to_async(provider_config)(provider, api_key)
    except GatewayError as exc:
        return result(False, error=exc.message)
    try:
        async with asyncio.timeout(limit), httpx.AsyncClient(timeout=limit) as client:
            response = await client.get(config.url("/models"), headers=config.auth_headers())
    except TimeoutError:
        return result(False, error=f"no answer within {limit:g} s")
    except Exception as exc:  # httpx errors, and whatever a bad configuration raises
        return result(False, error=error_text(exc))
    if response.status_code in (401, 403):
        return result(False, response.status_code, "the API key was refused")
    if response.status_code >= 400:
        return result(False, response.status_code, f"HTTP {response.status_code}")
    return result(True, response.status_code)


async def probe_providers(providers: list[Provider], limit: float = 5.0) -> list[ProbeResult]:
    """Several providers at once: the slowest one's time, not the sum."""
    return list(await asyncio.gather(*(probe_provider(p, limit) for p in providers)))


async def probe_local_model(model: LocalModel, limit: float = 60.0) -> ProbeResult:
    """Loadable: the folder loads through mlx-lm (in a worker thread)."""
    started = time.perf_counter()
    try:
        loaded = await asyncio.wait_for(asyncio.to_thread(load_model, model.spec()), limit)
        loaded.release()
        ok, error = True, ""
    except TimeoutError:  # its text is empty: name the limit instead
        ok, error = False, f"no answer within {limit:g}s"
    except Exception as exc:
        ok, error = False, error_text(exc)
    return ProbeResult(model.name, "local", ok, (time.perf_counter() - started) * 1000, None, error)


def describe(result: ProbeResult) -> str:
    """One line for an operator: "OK (HTTP 200, 12 ms)" or what failed."""
    status = f"HTTP {result.status}" if result.status else "no response"
    summary = f"{status}, {result.latency_ms:.0f} ms"
    return f"OK ({summary})" if result.ok else f"FAILED ({summary}): {result.error}"
