"""One health truth per deployment (provider + upstream model, or local model),
for the route tester: its breakers as the request path sees them, and what its
recent attempts did, as every gateway process logged them.

Recent outcomes come from the request log's attempt trails ("backend/model=
outcome, ..."), so they are shared by all processes and need no state of their
own: the last RECENT_MINUTES, at most SAMPLE_ROWS rows (the time index keeps
the read small). A deployment with no attempt in the log at all is "never
contacted", which is not "healthy".

The log is the `gateway.usage` app's: this module is routing's one read of
it (nothing there imports routing's health back).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.utils import timezone

from gateway.usage.models import RequestLog

RECENT_MINUTES = 15
SAMPLE_ROWS = 2000
SHOWN_OUTCOMES = 10
_ATTEMPT = re.compile(r"(?:^|, )(?P<target>[^=,]+?)=(?P<outcome>[^,]+)")


def succeeded(outcome: str) -> bool:
    return outcome in ("ok", "continued") or outcome.endswith(" chunks")


def skipped(outcome: str) -> bool:
    return outcome.startswith("skipped")  # not tried: says nothing of the deployment


@dataclass
class Recent:
    """A deployment's attempts in the window, newest first."""

    outcomes: list[str] = field(default_factory=list)
    failures: int = 0
    tried: int = 0
    last_seen: datetime | None = None

    @property
    def error_rate(self) -> float | None:
        return self.failures / self.tried if self.tried else None


def recent_attempts(now: datetime | None = None) -> dict[str, Recent]:
    """By deployment ("backend/model", as the trails name it)."""
    since = (now or timezone.now()) - timedelta(minutes=RECENT_MINUTES)
    rows = (
        RequestLog.objects.filter(created_at__gte=since)
        .exclude(attempt_trail="")
        .order_by("-created_at")
        .values_list("created_at", "attempt_trail")[:SAMPLE_ROWS]
    )
    found: dict[str, Recent] = {}
    for created_at, trail in rows:
        # A trail lists tries in order; newest first means its last try first.
        for match in reversed(list(_ATTEMPT.finditer(trail))):
            outcome = match["outcome"].strip()
            if skipped(outcome):
                continue
            recent = found.setdefault(match["target"].strip(), Recent())
            recent.last_seen = recent.last_seen or created_at
            recent.tried += 1
            recent.failures += not succeeded(outcome)
            if len(recent.outcomes) < SHOWN_OUTCOMES:
                recent.outcomes.append(outcome)
    return found


def ever_contacted(deployment: str) -> bool:
    """Any attempt in the whole log (a scan, bounded by the log's size: admin only)."""
    return RequestLog.objects.filter(attempt_trail__contains=f"{deployment}=").exists()
