"""Serve this machine's local models to a front tier of gateways: a model server."""

from __future__ import annotations

import ipaddress
import os
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from gateway.addresses import EVERY_INTERFACE, allow_host, python_command, reachable_host, url_host
from gateway.edge.launch import edge_command
from routing.models import LocalModel

from .serve import prepare_data

DEFAULT_PORT = 8100
MAKE_KEY = 'python3 -c "import secrets; print(secrets.token_urlsafe(32))"'


def check_private(host: str) -> None:
    """A model server answers whoever holds its one key, with no rate limits of
    its own: it listens on a loopback or private address, never a public one."""
    if host in EVERY_INTERFACE or host == "localhost":
        return
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise CommandError(f"--host {host!r}: give an IP address (loopback or private)") from None
    if address.is_global:
        raise CommandError(
            f"--host {host}: a public address; a model server listens on a loopback or "
            "private address only (the gateways in front of it face the clients)"
        )


class Command(BaseCommand):
    help = (
        "Serve this machine's local models to other gateways (a model server): the gateway's "
        "own OpenAI protocol, behind the key in GATEWAY_MODEL_SERVER_KEY, on a loopback or "
        "private address. Add it to the front gateways as a provider of kind model-server."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=os.environ.get("GATEWAY_HOST", "127.0.0.1"))
        parser.add_argument(
            "--port", type=int, default=int(os.environ.get("GATEWAY_PORT", DEFAULT_PORT))
        )
        parser.add_argument("--no-demo", action="store_true", help="do not build the demo model")
        parser.add_argument(
            "--dry-run", action="store_true", help="prepare and check, but do not serve"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.GATEWAY_MODEL_SERVER_KEY:
            raise CommandError(
                "set GATEWAY_MODEL_SERVER_KEY to the key the front gateways will present "
                f"(make one with: {MAKE_KEY}); it is their provider's API key"
            )
        host, port = options["host"], options["port"]
        check_private(host)
        prepare_data(self.stdout, demo=not options["no_demo"])
        names = list(LocalModel.objects.filter(enabled=True).values_list("name", flat=True))
        shown = reachable_host(host)
        allow_host(shown)
        base = f"http://{url_host(shown)}:{port}/v1"
        self.stdout.write(self.style.SUCCESS(f"\nModel server starting on {base}"))
        self.stdout.write(f"  local models: {', '.join(names) or '(none enabled yet)'}")
        if host in EVERY_INTERFACE:
            self.stdout.write(
                "  listening on every interface: let only the gateways' network reach this port"
            )
        self.stdout.write(
            "  on each front gateway, a provider of kind model-server (YAML:\n"
            f"    {{name: NAME, kind: model-server, base_url: {base}, "
            "api_key_env: GATEWAY_MODEL_SERVER_KEY}),\n"
            "  and a mapping per model to it (or a load-balanced group of model servers).\n"
            f"  Local models are added here: {python_command()} manage.py import_config FILE\n"
        )
        if options["dry_run"]:
            return
        sys.stdout.flush()
        os.execv(sys.executable, edge_command(host, port))
