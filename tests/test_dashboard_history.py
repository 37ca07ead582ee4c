"""The dashboard's last hour per backend (gateway/history.py), with an injected clock."""

from __future__ import annotations

from gateway.history import LATENCY_BOUNDS_MS, MINUTES, NO_BACKEND, History


def test_minutes_per_backend_with_a_mergeable_latency_histogram() -> None:
    now = [6_000_000.0]  # seconds; minute 100000
    history = History(clock=lambda: now[0])
    history.note("local:demo", 200, 0, 40.0)
    history.note("local:demo", 503, 1, 700.0)
    history.note("cloud", 429, 0, 99_000.0)  # slower than every bound
    history.note("", 404, 0, 1.0)  # refused before any backend
    now[0] += 120  # two minutes later
    history.note("local:demo", 200, 2, 100.0)  # exactly on a bound: that bucket
    out = history.export()
    assert out["first_minute"] == 100_002 - MINUTES + 1
    assert list(out["series"]) == [NO_BACKEND, "cloud", "local:demo"]
    demo = out["series"]["local:demo"]
    assert len(demo) == MINUTES
    then, latest = demo[-3], demo[-1]
    assert then[:3] == [2, 1, 1] and latest[:3] == [1, 0, 2]
    assert then[3 + 0] == 1 and then[3 + LATENCY_BOUNDS_MS.index(1_000)] == 1
    assert latest[3 + LATENCY_BOUNDS_MS.index(100)] == 1
    cloud = out["series"]["cloud"][-3]
    assert cloud[1] == 1 and cloud[-1] == 1  # a 429 counts as an error; the overflow bucket
    # An hour later the old minutes are gone.
    now[0] += 3600
    history.note("cloud", 200, 0, 1.0)
    assert list(history.export()["series"]) == ["cloud"]
