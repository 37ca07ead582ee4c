"""One command from a fresh checkout to a running gateway."""

from __future__ import annotations

import os
import sys
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from routing.models import ApiKey, LocalModel
from routing.services_keys import create_api_key


class Command(BaseCommand):
    help = (
        "Apply migrations, build the demo model and create an API key on first run, print "
        "how to call the gateway, and serve it with daphne."
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
        self.stdout.write(self.style.SUCCESS(f"\nThe gateway is starting on {base}\n"))
        secret = self._first_key()
        if secret:
            key, py_key = secret, f'"{secret}"'
            self.stdout.write(
                f"  API key (created on first run; shown only now, copy it):\n    {secret}\n"
            )
        else:
            key, py_key = "$GATEWAY_API_KEY", 'os.environ["GATEWAY_API_KEY"]'  # import os
            self.stdout.write(
                "  API key: the one printed on the first run (only its hash is kept), "
                "or a new one from: python manage.py create_api_key NAME\n"
            )
        if not settings.GATEWAY_REQUIRE_API_KEYS:
            self.stdout.write("  (keys are not required: GATEWAY_REQUIRE_API_KEYS is off)\n")
        hello = '[{"role": "user", "content": "Hello"}]'
        self.stdout.write(
            "  curl:\n"
            f'    curl {base}/v1/chat/completions -H "Authorization: Bearer {key}" '
            "-H 'Content-Type: application/json' "
            f'-d \'{{"model": "{model}", "messages": {hello}, "max_tokens": 32}}\'\n'
            "  OpenAI SDK (Python):\n"
            f'    OpenAI(base_url="{base}/v1", api_key={py_key}).chat.completions.create('
            f'model="{model}", messages={hello})\n'
            "  Anthropic SDK (Python):\n"
            f'    Anthropic(base_url="{base}", api_key={py_key}).messages.create('
            f'model="{model}", max_tokens=32, messages={hello})\n'
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

    def _first_key(self) -> str:
        """A key for this machine when there is none yet; its secret, or "" if keys exist."""
        if ApiKey.objects.exists():
            return ""
        _, secret = create_api_key("local")
        return secret
