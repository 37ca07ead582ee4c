"""Is everything enabled usable right now: the database, local models, providers."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable
from typing import Any

from asgiref.sync import async_to_sync
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection

from routing.models import LocalModel, Provider
from routing.probes import ProbeResult, error_text, probe_local_model, probe_providers


def _database() -> ProbeResult:
    started = time.perf_counter()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any driver error means the same thing here: unusable
        elapsed = (time.perf_counter() - started) * 1000
        return ProbeResult("default", "database", False, elapsed, None, error_text(exc))
    return ProbeResult("default", "database", True, (time.perf_counter() - started) * 1000)


async def _bounded(
    probe: Awaitable[ProbeResult], name: str, kind: str, limit: float
) -> ProbeResult:
    # httpx's timeout is per phase (connect, each read): a server trickling bytes could
    # hold a probe far longer, so each check also gets a hard overall limit.
    started = time.perf_counter()
    try:
        return await asyncio.wait_for(probe, limit)
    except TimeoutError:
        elapsed = (time.perf_counter() - started) * 1000
        return ProbeResult(name, kind, False, elapsed, None, f"no answer within {limit:g}s")


async def _probe_all(
    models: list[LocalModel], providers: list[Provider], limit: float, local_limit: float
) -> list[ProbeResult]:
    loads = [
        _bounded(probe_local_model(m, local_limit), m.name, "local", local_limit + 1)
        for m in models
    ]
    local, remote = await asyncio.gather(asyncio.gather(*loads), probe_providers(providers, limit))
    return [*local, *remote]


class Command(BaseCommand):
    help = (
        "Check the database, every enabled local model (it loads) and every enabled "
        "provider (reachable, key accepted), in parallel. Exit status 1 if any fails."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="print a JSON document")
        parser.add_argument(
            "--timeout",
            type=float,
            default=5.0,
            metavar="SECONDS",
            help="limit for each provider and the database (default: 5)",
        )
        parser.add_argument(
            "--local-timeout",
            type=float,
            default=120.0,
            metavar="SECONDS",
            help="limit for loading each local model (default: 120; weights take time). A "
            "load that overruns it is reported as failed, but still runs to its end before "
            "the command exits.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        limit, local_limit = options["timeout"], options["local_timeout"]
        if limit <= 0 or local_limit <= 0:
            raise CommandError("--timeout and --local-timeout must be positive")
        results = [_database()]
        if results[0].ok:
            # Rows are read here, on this thread's connection; the probes then need no
            # database (credentials come along through select_related).
            models = list(LocalModel.objects.filter(enabled=True).order_by("name"))
            providers = list(
                Provider.objects.filter(enabled=True).select_related("credential").order_by("name")
            )
            results += async_to_sync(_probe_all)(models, providers, limit, local_limit)
        states = _breakers() if results[0].ok else None
        if options["json"]:
            self.print_json(results, states)
        else:
            self.print_table(results)
            self.print_breakers(states)
        failed = [r for r in results if not r.ok]
        if failed:
            names = ", ".join(f"{r.kind} {r.name!r}" for r in failed)
            raise CommandError(f"unhealthy: {names}")

    def print_breakers(self, states: dict[str, str] | None) -> None:
        if states is None:  # each gateway process has its own: /metrics shows them
            return
        self.stdout.write("\nBREAKER (per deployment)  STATE")
        for name, state in states.items():
            line = f"{name}  {state}"
            self.stdout.write(self.style.ERROR(line) if state != "closed" else line)

    def print_json(self, results: list[ProbeResult], states: dict[str, str] | None) -> None:
        checks = [
            {
                "name": r.name,
                "kind": r.kind,
                "ok": r.ok,
                "status": "OK" if r.ok else "FAIL",
                "latency_ms": round(r.latency_ms, 1),
                "http_status": r.status,
                "error": r.error,
            }
            for r in results
        ]
        document = {"ok": all(r.ok for r in results), "checks": checks, "breakers": states}
        self.stdout.write(json.dumps(document, indent=2))

    def print_table(self, results: list[ProbeResult]) -> None:
        rows = [("NAME", "KIND", "STATUS", "LATENCY", "ERROR")]
        rows += [
            (r.name, r.kind, "OK" if r.ok else "FAIL", f"{r.latency_ms:.0f} ms", _detail(r))
            for r in results
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        for row in rows:
            cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
            line = "  ".join([*cells, row[4]]).rstrip()
            style = self.style.ERROR if row[2] == "FAIL" else (lambda text: text)
            self.stdout.write(style(line))


def _breakers() -> dict[str, str] | None:
    """Every deployment's breaker and its state, when they are shared (Redis):
    a breaker in another process's memory cannot be read from here."""
    from routing.backends import deployments
    from routing.breakers import breakers
    from routing.selectors import load_snapshot

    box = breakers()
    if not box.shared:
        return None
    return {
        name: box.state(name, config)
        for name, (_, config) in sorted(deployments(load_snapshot()).items())
    }


def _detail(result: ProbeResult) -> str:
    error = " ".join(result.error.split())  # a multi-line exception would break the table
    if result.status and not result.ok and str(result.status) not in error:
        return f"{error} (HTTP {result.status})"
    return error
