"""Build the offline demo model and register it as a LocalModel."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from routing.services import register_local_model


class Command(BaseCommand):
    help = (
        "Generate a small Llama-architecture model with seeded random weights and a "
        "tokenizer trained on local text, and register it as a local model."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", default="demo", help="LocalModel name (default: demo)")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument(
            "--path", help="target folder (default: GATEWAY_MODELS_DIR/<name>)", default=None
        )
        parser.add_argument("--hidden-size", type=int, default=256)
        parser.add_argument("--layers", type=int, default=4)
        parser.add_argument("--vocab-size", type=int, default=2048)

    def handle(self, *args: Any, **options: Any) -> None:
        from inference.demo_model import build_demo_model

        name = options["name"]
        target = Path(options["path"] or Path(settings.GATEWAY_MODELS_DIR) / name)
        started = time.perf_counter()
        build_demo_model(
            target,
            seed=options["seed"],
            hidden_size=options["hidden_size"],
            num_layers=options["layers"],
            vocab_size=options["vocab_size"],
            progress=lambda line: self.stdout.write(f"  {line}"),
        )
        register_local_model(name, target)
        self.stdout.write(
            self.style.SUCCESS(
                f"built {name!r} in {time.perf_counter() - started:.1f}s at {target}"
            )
        )
