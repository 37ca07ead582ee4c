"""The dashboard's last hour per backend (gateway/history.py), with an injected clock."""

from __future__ import annotations

from gateway.history import LATENCY_BOUNDS_MS, MINUTES, NO_BACKEND, History
from routing.served import Attempt


def test_attempts_per_minute_and_backend_with_a_mergeable_latency_histogram() -> None:
    now = [6_000_000.0]  # seconds; minute 100000
    history = History(clock=lambda: now[0])
    history.note([Attempt("local:demo", "demo", "ok", 40.0)], 200, 41.0)
    # The provider failed, then the local model answered: the failure is the provider's.
    history.note([Attempt("cloud", "gpt-4o", "503", 700.0),
                  Attempt("local:demo", "demo", "ok", 99_000.0)], 200, 99_800.0)  # fmt: skip
    history.note([Attempt("cloud", "gpt-4o", "skipped (breaker open)", 0.0),
                  Attempt("local:demo", "demo", "ok", 100.0)], 200, 101.0)  # fmt: skip
    history.note([], 429, 1.0)  # refused before any backend
    history.note([], 404, 1.0)
    now[0] += 120  # two minutes later
    history.note([Attempt("local:demo", "demo", "ok", 100.0)], 200, 101.0)
    out = history.export()
    assert out["first_minute"] == 100_002 - MINUTES + 1
    assert list(out["series"]) == [NO_BACKEND, "cloud", "local:demo"]
    cloud, demo = out["series"]["cloud"][-3], out["series"]["local:demo"][-3]
    assert cloud[:3] == [1, 1, 1]  # tried once (the skip is no try), failed, moved on
    assert cloud[3 + LATENCY_BOUNDS_MS.index(1_000)] == 1
    assert demo[:3] == [3, 0, 0] and demo[3] == 1 and demo[-1] == 1  # 40 ms; 99 s: overflow
    assert demo[3 + LATENCY_BOUNDS_MS.index(100)] == 1  # exactly on a bound: that bucket
    assert out["series"][NO_BACKEND][-3][:2] == [2, 1]  # the 429 is an error, the 404 not
    assert out["series"]["local:demo"][-1][:3] == [1, 0, 0]
    # An hour later the old minutes are gone.
    now[0] += 3600
    history.note([Attempt("cloud", "gpt-4o", "ok", 1.0)], 200, 2.0)
    assert list(history.export()["series"]) == ["cloud"]
