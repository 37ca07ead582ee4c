"""Django start-up time: management commands, and what `django.setup()` imports.

    .venv/bin/python benchmarks/bench_startup.py [--runs 5]

Times (wall clock, median of --runs, each in a fresh process) `manage.py
check`, `manage.py routes` and `manage.py help` against a migrated data dir of
its own, next to two baselines measured in the same run: the bare interpreter
(`python -c pass`, the floor no command goes below) and `import mlx_lm` (what
every command paid on top while Django's start-up pulled in MLX). Then runs
`python -X importtime -c 'import django; django.setup()'` with the gateway's
settings and says whether any mlx / mlx_lm / transformers module was imported,
with the costliest imports. Goal (issue 12): check and routes under 1.5 s, and
no MLX at `django.setup()`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, gateway_env, manage
from common import progress as say

GOAL_S = 1.5
GOAL_COMMANDS = ("check", "routes")
HEAVY = ("mlx", "mlx_lm", "transformers")  # top-level packages django.setup() must not import
SETUP = "import django; django.setup()"


def wall(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
    return time.perf_counter() - started


def median_wall(name: str, argv: list[str], env: dict[str, str], runs: int) -> float:
    times = []
    for i in range(runs):
        times.append(wall(argv, env))
        say(f"  {name}: run {i + 1}/{runs} {times[-1]:.3f} s")
    return statistics.median(times)


Import = tuple[int, int, int, str]  # cumulative us, self us, nesting depth, module


def import_times(env: dict[str, str]) -> list[Import]:
    """Each import made by `import django; django.setup()`, as -X importtime prints it."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", SETUP],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    rows = []
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        self_us, cumulative_us, module = line.removeprefix("import time:").split("|", 2)
        depth = (len(module) - len(module.lstrip()) - 1) // 2  # two spaces per level
        rows.append((int(cumulative_us), int(self_us), depth, module.strip()))
    return rows


def heavy_modules(rows: list[Import]) -> list[str]:
    return sorted({m for *_, m in rows if m.split(".")[0] in HEAVY})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per command")
    parser.add_argument("--top", type=int, default=12, help="costliest imports to list")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        data = Path(tmp)
        env = gateway_env(data)
        say(f"migrating a fresh data dir ({data}), not timed")
        manage(data, "migrate", "--noinput")
        python = [sys.executable]
        timed = {
            "python -c pass (floor)": [*python, "-c", "pass"],
            "python -c 'import mlx_lm'": [*python, "-c", "import mlx_lm"],
            **{f"manage.py {c}": [*python, "manage.py", c] for c in ("check", "routes", "help")},
        }
        medians = {}
        for name, argv in timed.items():
            say(f"{name}: {args.runs} runs")
            medians[name] = median_wall(name, argv, env, args.runs)
        say("python -X importtime -c 'import django; django.setup()'")
        rows = import_times(env)

    floor = medians["python -c pass (floor)"]
    print(f"\nwall time, median of {args.runs} fresh processes each:")
    rows_out = [("command", "median", "x floor", "goal", "result")]
    for name, seconds in medians.items():
        goal, verdict = "-", "info"
        if name.removeprefix("manage.py ") in GOAL_COMMANDS:
            goal, verdict = f"< {GOAL_S:g} s", "PASS" if seconds < GOAL_S else "MISS"
        rows_out.append((name, f"{seconds:.3f} s", f"{seconds / floor:.1f}x", goal, verdict))
    widths = [max(len(r[i]) for r in rows_out) for i in range(5)]
    rows_out.insert(1, tuple("-" * w for w in widths))
    for row in rows_out:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())

    heavy = heavy_modules(rows)
    total_ms = sum(own for _, own, _, _ in rows) / 1e3
    print(f"\ndjango.setup(): {len(rows)} modules, {total_ms:.0f} ms (sum of their self times)")
    if heavy:
        named = ", ".join(heavy[:8])
        print(f"MISS: django.setup() imports {len(heavy)} MLX-side module(s): {named}")
    else:
        print(f"PASS: no {' / '.join(HEAVY)} module imported by django.setup()")
    print(f"costliest top-level imports (cumulative, with what they import), top {args.top}:")
    top_level = sorted((r for r in rows if r[2] == 0), reverse=True)[: args.top]
    for cumulative, _, _, module in top_level:
        print(f"  {cumulative / 1e3:8.1f} ms  {module}")
    failed = heavy or any(medians[f"manage.py {c}"] >= GOAL_S for c in GOAL_COMMANDS)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
