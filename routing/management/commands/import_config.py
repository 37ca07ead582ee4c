"""Apply a routing configuration YAML document: validate all of it, then write it at once."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import yaml
from django.core.management.base import BaseCommand, CommandError, CommandParser

from routing.config_io import import_document
from routing.config_schema import ConfigError, load_yaml


class Command(BaseCommand):
    help = (
        "Create or update local models and providers (by name) and mappings (by pattern) "
        "from a YAML file written by export_config. Nothing is written unless the whole "
        "file is valid. Provider keys are read from the environment variables it names."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", metavar="FILE", help="the YAML document ('-' for stdin)")
        parser.add_argument(
            "--dry-run", action="store_true", help="validate and show the changes; write nothing"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        source, dry_run = options["file"], options["dry_run"]
        try:
            text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"cannot read {source}: {exc}") from None
        try:
            document = load_yaml(text)
        except yaml.YAMLError as exc:
            raise CommandError(f"{source} is not valid YAML: {exc}") from None
        try:
            plan = import_document(document, os.environ, dry_run=dry_run)
        except ConfigError as exc:
            listed = "\n".join(f"  {problem}" for problem in exc.problems)
            raise CommandError(
                f"{source}: {len(exc.problems)} problem(s), nothing was written:\n{listed}"
            ) from None
        for warning in plan.warnings:
            self.stderr.write(f"warning: {warning}")
        changes = plan.changes
        prefix = "would " if dry_run else ""
        for change in changes:
            self.stdout.write(f"  {prefix}{change}")
        if not changes:
            self.stdout.write("no changes: the database already matches the file")
        elif dry_run:
            self.stdout.write(f"dry run: {len(changes)} change(s), nothing written")
        else:
            self.stdout.write(self.style.SUCCESS(f"imported: {len(changes)} change(s)"))
