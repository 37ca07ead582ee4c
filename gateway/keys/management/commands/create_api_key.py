"""Create a client API key and print its secret, once."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from gateway.keys.services import create_api_key


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(value)
    return number


class Command(BaseCommand):
    help = (
        "Create a client API key. Its secret is printed once and never stored: only a "
        "hash is kept, so copy it now."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="who or what uses the key")
        parser.add_argument(
            "--models",
            nargs="+",
            default=[],
            metavar="PATTERN",
            help="fnmatch patterns of the model names it may use (default: every model)",
        )
        parser.add_argument(
            "--rpm", type=_positive, help="requests per minute (default: unlimited)"
        )
        parser.add_argument(
            "--tpm", type=_positive, help="input + output tokens per minute (default: unlimited)"
        )
        parser.add_argument(
            "--expires-days", type=_positive, help="expires after N days (default: never)"
        )
        parser.add_argument("--budget-day", help="USD per UTC day (default: none)")
        parser.add_argument("--budget-month", help="USD per calendar month (default: none)")

    def handle(self, *args: Any, **options: Any) -> None:
        days = options["expires_days"]
        try:
            key, secret = create_api_key(
                options["name"],
                allowed_models=options["models"],
                requests_per_minute=options["rpm"],
                tokens_per_minute=options["tpm"],
                expires_at=timezone.now() + timedelta(days=days) if days else None,
                budget_per_day=options["budget_day"],
                budget_per_month=options["budget_month"],
            )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        limits = ", ".join(
            part
            for part in (
                f"{key.requests_per_minute} requests/min" if key.requests_per_minute else "",
                f"{key.tokens_per_minute} tokens/min" if key.tokens_per_minute else "",
                f"{key.budget_per_day} USD/day" if key.budget_per_day else "",
                f"{key.budget_per_month} USD/month" if key.budget_per_month else "",
            )
            if part
        )
        self.stdout.write(f"created API key {key.name!r} ({key.prefix}…)")
        self.stdout.write(f"  models:  {', '.join(key.allowed_models) or 'all'}")
        self.stdout.write(f"  limits:  {limits or 'none'}")
        self.stdout.write(f"  expires: {key.expires_at.isoformat() if key.expires_at else 'never'}")
        self.stdout.write("the key (shown only now; only its hash is stored):")
        self.stdout.write(secret)
