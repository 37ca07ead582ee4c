"""One command from a fresh checkout to a running gateway."""

from __future__ import annotations

import os
import sys
from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from routing.models import LocalModel


class Command(BaseCommand):
    help = (
        "Apply migrations, build the demo model on first run, print how to call the "
        "gateway, and serve it with daphne."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=os.environ.get("GATEWAY_HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("GATEWAY_PORT", "8000")))
        parser.add_argument("--no-demo", action="store_true", help="do not build the demo model")
        parser.add_argument(
            "--dry-run", action="store_true", help="prepare everything but do not start daphne"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write("applying migrations ...")
        call_command("migrate", interactive=False, verbosity=0)
        demo = LocalModel.objects.filter(name="demo").first()
        if not options["no_demo"] and (
            demo is None or not (demo.resolved_path / "config.json").exists()
        ):
            self.stdout.write("building the demo model (first run) ...")
            call_command("build_demo_model", stdout=self.stdout)
        host, port = options["host"], options["port"]
        base = f"http://{host}:{port}"
        model = "demo" if LocalModel.objects.filter(name="demo", enabled=True).exists() else "MODEL"
        self.stdout.write(
            self.style.SUCCESS(f"\nThe gateway is starting on {base}\n") + "  curl:\n"
            f"    curl {base}/v1/chat/completions -H 'Content-Type: application/json' "
            f'-d \'{{"model": "{model}", "messages": [{{"role": "user", '
            f'"content": "Hello"}}], "max_tokens": 32}}\'\n'
            "  OpenAI SDK (Python):\n"
            f'    OpenAI(base_url="{base}/v1", api_key="unused").chat.completions.create('
            f'model="{model}", messages=[{{"role": "user", "content": "Hello"}}])\n'
            f"  admin: {base}/admin/  (create a login with: python manage.py createsuperuser)\n"
        )
        if options["dry_run"]:
            return
        sys.stdout.flush()
        argv = [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            host,
            "-p",
            str(port),
            "gateway.asgi:application",
        ]
        os.execv(sys.executable, argv)
