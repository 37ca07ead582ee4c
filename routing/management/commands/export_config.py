"""Write the routing configuration as one YAML document (no secrets)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from routing.config_export import export_document
from routing.config_schema import dump_yaml


class Command(BaseCommand):
    help = (
        "Export local models, providers and mappings as YAML for import_config. API keys "
        "are never written: each provider names the environment variable its key comes from."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("-o", "--output", metavar="FILE", help="write here (default: stdout)")

    def handle(self, *args: Any, **options: Any) -> None:
        document, warnings = export_document()
        text = dump_yaml(document)
        for warning in warnings:
            self.stderr.write(f"warning: {warning}")
        if not options["output"]:
            self.stdout.write(text, ending="")
            return
        try:
            Path(options["output"]).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"cannot write {options['output']}: {exc.strerror}") from None
        counts = ", ".join(
            f"{len(document[k])} {k.replace('_', ' ')}" for k in document if k != "version"
        )
        self.stdout.write(self.style.SUCCESS(f"wrote {options['output']}: {counts}"))
