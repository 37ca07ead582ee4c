"""One command from a fresh checkout to a running gateway."""

from __future__ import annotations

import os
import sys
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper

from gateway.addresses import allow_host, python_command, reachable_host, url_host
from gateway.edge.launch import edge_command
from gateway.keys.models import ApiKey
from gateway.keys.services import create_api_key
from routing.models import LocalModel


def prepare_data(stdout: OutputWrapper, *, demo: bool) -> None:
    """Migrate, and on a first run build the demo model (unless `demo` is off)."""
    call_command("migrate", interactive=False, verbosity=0)
    row = LocalModel.objects.filter(name="demo").first()
    if demo and (row is None or not (row.resolved_path / "config.json").exists()):
        stdout.write("building the demo model (first run) ...")
        call_command("build_demo_model", stdout=stdout)


class Command(BaseCommand):
    help = (
        "Apply migrations, build the demo model and create an API key on first run, print "
        "how to call the gateway, and serve it with daphne."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=os.environ.get("GATEWAY_HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("GATEWAY_PORT", "8000")))
        parser.add_argument(
            "--workers",
            type=int,
            default=int(os.environ.get("GATEWAY_WORKERS", "1")),
            help="gateway processes on this address (default 1); with more than one, local "
            "models are served by one model-server process started for them",
        )
        parser.add_argument("--no-demo", action="store_true", help="do not build the demo model")
        parser.add_argument(
            "--dry-run", action="store_true", help="prepare everything but do not start daphne"
        )
        parser.add_argument(
            "--admin",
            metavar="USERNAME",
            help="make this admin login if it does not exist (password from "
            "DJANGO_SUPERUSER_PASSWORD, else asked in a terminal)",
        )
        parser.add_argument(
            "--no-admin", action="store_true", help="do not offer to make an admin login"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["workers"] < 1:
            raise CommandError("--workers: at least 1")
        if options["workers"] > 1 and ":" in options["host"]:
            # The workers adopt one listening socket, which daphne takes as IPv4.
            raise CommandError("--workers: listen on an IPv4 address (0.0.0.0 for every one)")
        self.stdout.write("applying migrations ...")
        prepare_data(self.stdout, demo=not options["no_demo"])
        host, port = options["host"], options["port"]
        shown = reachable_host(host)
        base = f"http://{url_host(shown)}:{port}"
        admin = self._admin(options)
        model = "demo" if LocalModel.objects.filter(name="demo", enabled=True).exists() else "MODEL"
        self.stdout.write(self.style.SUCCESS(f"\nThe gateway is starting on {base}\n"))
        if shown != host:
            self.stdout.write(
                f"  (listening on every interface, {host}; on this machine "
                f"http://127.0.0.1:{port} works too)\n"
            )
        if allow_host(shown):
            self.stdout.write(
                f"  {shown} added to the allowed hosts for this run; clients that use another "
                "name for this machine need it in GATEWAY_ALLOWED_HOSTS\n"
            )
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
                f"or a new one from: {python_command()} manage.py create_api_key NAME\n"
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
        )
        if admin:
            self.stdout.write(f"  admin: {base}/admin/  (log in as {admin})\n")
        else:
            self.stdout.write(
                f"  admin: {base}/admin/  (no login yet: {python_command()} manage.py "
                "createsuperuser, or serve --admin NAME)\n"
            )
        if options["workers"] > 1:
            self._warn_shared_state()
        if options["dry_run"]:
            return
        sys.stdout.flush()
        if options["workers"] > 1:
            from gateway.edge.workers import Supervisor

            local = LocalModel.objects.filter(enabled=True).exists()
            grace = settings.GATEWAY_SHUTDOWN_GRACE_SECONDS
            say = self._say
            sys.exit(Supervisor(host, port, options["workers"], model_server=local,
                                grace=grace, say=say).run())  # fmt: skip
        # daphne with the edge guard and the graceful drain (gateway.edge.server).
        os.execv(sys.executable, edge_command(host, port))

    def _say(self, line: str) -> None:
        self.stdout.write(f"serve: {line}")
        self.stdout.flush()

    def _warn_shared_state(self) -> None:
        """Several workers share breakers, rate limits, budgets and the dashboard
        through Redis, and the routing and request log through the database."""
        if not settings.REDIS_URL:
            self.stderr.write(
                "warning: --workers without REDIS_URL: each worker keeps its own breakers, "
                "rate limits, budgets and dashboard (a key gets N times its limit); set "
                "REDIS_URL (README: Production)"
            )
        if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
            self.stderr.write(
                "warning: --workers on SQLite: one writer at a time for every worker's "
                "request log; set DATABASE_URL to PostgreSQL (README: Production)"
            )

    def _admin(self, options: dict[str, Any]) -> str | None:
        """The admin login to name: the one asked for with --admin (made if new), else
        the first superuser; on a first run in a terminal, offers to make one."""
        users = get_user_model().objects
        name = options["admin"]
        if name:
            if not users.filter(username=name).exists():
                self._create_admin(name)
            return str(name)
        first = users.filter(is_superuser=True).order_by("pk").first()
        if first is not None:
            return first.get_username()
        if options["no_admin"] or not sys.stdin.isatty():
            return None
        answer = input("No admin login yet. Make one now? [Y/n] ").strip().lower()
        if answer not in ("", "y", "yes"):
            return None
        call_command("createsuperuser", interactive=True)
        first = users.filter(is_superuser=True).order_by("pk").first()
        return first.get_username() if first is not None else None

    def _create_admin(self, name: str) -> None:
        """Django's createsuperuser: scripted when DJANGO_SUPERUSER_PASSWORD is set,
        else asking for the password in a terminal."""
        if os.environ.get("DJANGO_SUPERUSER_PASSWORD"):
            email = None if os.environ.get("DJANGO_SUPERUSER_EMAIL") else f"{name}@localhost"
            call_command("createsuperuser", interactive=False, username=name, email=email)
        elif sys.stdin.isatty():
            call_command("createsuperuser", interactive=True, username=name)
        else:
            raise CommandError(
                f"--admin {name}: set DJANGO_SUPERUSER_PASSWORD (not in a terminal, "
                "nobody can be asked for the password)"
            )

    def _first_key(self) -> str:
        """A key for this machine when there is none yet; its secret, or "" if keys exist."""
        if ApiKey.objects.exists():
            return ""
        _, secret = create_api_key("local")
        return secret
