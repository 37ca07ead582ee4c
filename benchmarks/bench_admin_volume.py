"""The admin's request log and usage pages at volume, on SQLite (the default).

Seeds a fresh database with N request-log rows (default 200,000: about 30 days
at 7,000 a day, the default retention) through the log writer itself (so its
daily rollup is maintained as in production), then times each page through
Django's test client, in process: the request log list, its filters, its
search, a deep page, a row page, and the usage page for 30 days. The baseline,
measured in the same run, is the admin index (no log work): each page's ratio
to it says what the log costs.

    .venv/bin/python benchmarks/bench_admin_volume.py [--rows 200000] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import progress  # noqa: E402

GOAL_SECONDS = 0.5
BATCH = 500
MODELS = ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4", "claude-haiku", "demo", "o3-mini",
          "llama-3-8b", "qwen2.5-7b", "mistral-small", "gemma-2-9b"]  # fmt: skip
BACKENDS = ["openai", "anthropic", "azure", "local:demo", "local:llama", "vllm"]
STATUSES = [200] * 90 + [429, 499, 400, 404, 500, 502, 503, 503, 504, 401]


def setup_django(data_dir: Path) -> None:
    for name in [k for k in os.environ if k.startswith("GATEWAY_")] + ["DATABASE_URL"]:
        os.environ.pop(name, None)  # never someone else's database
    os.environ["GATEWAY_DATA_DIR"] = str(data_dir)
    os.environ["DJANGO_SETTINGS_MODULE"] = "gateway.settings"
    import django

    django.setup()


def seed(rows: int, keys: list[int]) -> None:
    from gateway.usage.services import write_request_logs

    rng = random.Random(17)
    now = datetime.now(UTC)
    span = timedelta(days=30).total_seconds()
    written = 0
    # Oldest first, as the gateway writes them.
    offsets = sorted((rng.random() * span for _ in range(rows)), reverse=True)
    while written < rows:
        batch = []
        for offset in offsets[written : written + BATCH]:
            status = rng.choice(STATUSES)
            model = rng.choice(MODELS)
            batch.append({
                "created_at": now - timedelta(seconds=offset),
                "api_key_id": rng.choice([*keys, None]),
                "protocol": rng.choice(["openai", "anthropic"]),
                "endpoint": rng.choice(["chat.completions", "messages"]),
                "requested_model": model,
                "backend": rng.choice(BACKENDS) if status != 404 else "",
                "served_model": model,
                "mapping": rng.choice(["gpt-*", "claude-*", ""]),
                "attempts": 1, "fallbacks": 0, "attempt_trail": "x/y=ok",
                "stream": rng.random() < 0.5, "status": status,
                "error_type": "" if status == 200 else "upstream_error",
                "input_tokens": rng.randint(10, 4000), "output_tokens": rng.randint(1, 800),
                "latency_ms": rng.uniform(50, 9000), "ttft_ms": rng.uniform(20, 900),
            })  # fmt: skip
        written += write_request_logs(batch)
        if written % 20_000 == 0 or written == rows:
            progress(f"seeded {written:,} / {rows:,} rows")


def timed(client: object, url: str, runs: int) -> float:
    get = client.get  # type: ignore[attr-defined]
    response = get(url)  # warm-up, and a check that the page works
    assert response.status_code == 200, (url, response.status_code)
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        response = get(url)
        samples.append(time.perf_counter() - started)
        assert response.status_code == 200, url
    return statistics.median(samples)


def show_queries(client: object, url: str) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        client.get(url)  # type: ignore[attr-defined]
    slowest = sorted(captured.captured_queries, key=lambda q: -float(q["time"]))[:3]
    for query in slowest:
        print(f"    {float(query['time']) * 1000:7.1f} ms  {query['sql'][:160]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--queries", action="store_true", help="show each page's slowest SQL")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-admin-") as tmp:
        setup_django(Path(tmp))
        from django.core.management import call_command
        from django.test import Client
        from django.test.utils import setup_test_environment

        from gateway.keys.models import ApiKey
        from gateway.usage.links import period_filters
        from gateway.usage.models import RequestLog

        progress("migrating a fresh SQLite database")
        call_command("migrate", verbosity=0)
        setup_test_environment()  # the test client's response.context, nothing else
        keys = [ApiKey.objects.create(name=f"team-{i}", key_hash=f"{i:064d}").pk
                for i in range(8)]  # fmt: skip
        started = time.perf_counter()
        seed(args.rows, keys)
        progress(f"seeded in {time.perf_counter() - started:.1f} s")
        from django.contrib.auth import get_user_model

        admin = get_user_model().objects.create_superuser("bench", password="x")
        client = Client()
        client.force_login(admin)
        row = RequestLog.objects.order_by("-id").values_list("id", flat=True).first()
        today = datetime.now(UTC).date()
        week = urlencode(period_filters(today - timedelta(days=6), today))
        log = "/admin/usage/requestlog/"
        pages = [
            ("request log list", log),
            ("filter: status 503", f"{log}?status=503"),
            ("filter: backend", f"{log}?backend=vllm"),
            ("filter: key", f"{log}?api_key__id__exact={keys[3]}"),
            ("filter: past 7 days", f"{log}?{week}"),
            ("filter: mapping", f"{log}?mapping=claude-%2A"),
            ("filter: key + status + 7 days",
             f"{log}?api_key__id__exact={keys[1]}&status=502&{week}"),
            ("search: 'haiku'", f"{log}?q=haiku"),
            ("page 200 of the list", f"{log}?p=200"),
            ("row page", f"{log}{row}/change/"),
            ("usage, 30 days", f"{log}usage/?days=30"),
            ("usage, 30 days, one key", f"{log}usage/?days=30&key={keys[2]}"),
        ]  # fmt: skip
        baseline = timed(client, "/admin/", args.runs)
        print(f"\n{args.rows:,} rows on SQLite, median of {args.runs} runs; baseline "
              f"(admin index) {baseline * 1000:.1f} ms\n")  # fmt: skip
        print(f"| page | time | / baseline | under {GOAL_SECONDS} s |")
        print("|---|---|---|---|")
        worst = 0.0
        for name, url in pages:
            seconds = timed(client, url, args.runs)
            worst = max(worst, seconds)
            ok = "yes" if seconds < GOAL_SECONDS else "NO"
            print(f"| {name} | {seconds * 1000:.0f} ms | {seconds / baseline:.1f} | {ok} |")
            if args.queries:
                show_queries(client, url)
        print(f"\nslowest page: {worst * 1000:.0f} ms (goal: under {GOAL_SECONDS * 1000:.0f} ms)")


if __name__ == "__main__":
    main()
