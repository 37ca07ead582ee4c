"""Delete request log rows past their retention."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from gateway.usage.services import prune_request_log


class Command(BaseCommand):
    help = (
        "Delete request log rows older than GATEWAY_REQUEST_LOG_RETENTION_DAYS "
        "(or --older-than DAYS). A running gateway also prunes once an hour."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than", type=int, metavar="DAYS", help="default: the retention setting"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        days = options["older_than"]
        if days is None:
            days = settings.GATEWAY_REQUEST_LOG_RETENTION_DAYS
            if days <= 0:
                self.stdout.write("retention is off (0 days): nothing pruned")
                return
        if days < 0:
            raise CommandError("--older-than must be 0 or more days")
        deleted = prune_request_log(days)
        self.stdout.write(f"deleted {deleted} request log row(s) older than {days} day(s)")
