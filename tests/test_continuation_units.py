"""routing.continuation.Continuing on its own: what is never continued, and the
one stream a continuation makes (usage summed, upstream framing dropped)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

from inference.cloud.errors import UpstreamError
from inference.errors import BackendUnavailable
from inference.types import (
    ChatRequest,
    Continued,
    Event,
    Finish,
    Message,
    TextDelta,
    TextPart,
    ThinkingDelta,
    Usage,
    WireEvent,
)
from routing.continuation import Continuing
from routing.served import Attempt, Served

CUT = UpstreamError("provider 'p' connection failed: reset", category="transient", backend="p")


class StubWalk:
    """The part of routing.failover.Walk a continuation uses; `continuation`: the
    events the next target streams, or None when no target can continue."""

    def __init__(self, continuation: list[Event] | None) -> None:
        self.served = Served("p", "m", [Attempt("p", "m", "ok", 1.0)])
        self.route = SimpleNamespace(requested="x", chain=())
        self.position = 0
        self.snapshot = None
        self.deadline = 0.0
        self.verdicts: list[bool | None] = []
        self._continuation = continuation

    async def settle(self, ok: bool | None, *, provider_too: bool = False) -> None:
        self.verdicts.append(ok)

    def after_serving(self) -> list[Any]:
        return []  # the stub's run() stands for the targets after the serving one

    async def run(self, call: Any, hops: Any, *, prefill: bool = False) -> Any:
        if self._continuation is None:
            raise BackendUnavailable("nobody can continue")
        self.served.attempts.append(Attempt("q", "n", "continued", 1.0))
        return self._continuation[:1], _events(self._continuation[1:])


async def _events(events: list[Event], fail: Exception | None = None) -> AsyncIterator[Event]:
    for event in events:
        yield event
    if fail is not None:
        raise fail


REQUEST = ChatRequest(model="x", messages=[Message("user", [TextPart("hi")])], max_tokens=8)


async def _drain(stream: Continuing) -> list[Event]:
    return [event async for event in stream]


@pytest.mark.parametrize(
    "held",
    [[ThinkingDelta("hmm"), TextDelta("echo:")], [TextDelta("")]],
    ids=["after-thinking", "nothing-to-continue"],
)
async def test_never_continued(held: list[Event]) -> None:
    walk = StubWalk([TextDelta(" more"), Finish("stop", Usage(5, 1))])
    stream = Continuing(REQUEST, walk, held, _events([], fail=CUT))  # type: ignore[arg-type]
    with pytest.raises(UpstreamError) as info:
        await _drain(stream)
    assert info.value is CUT  # the original failure, said in-band by the caller
    assert walk.verdicts == [False]  # counted against the broken deployment
    assert walk.served.continuations == 0


async def test_no_target_can_continue_gives_the_original_failure() -> None:
    walk = StubWalk(None)
    held: list[Event] = [TextDelta("echo:")]
    events = _events([TextDelta(" hello")], fail=CUT)
    stream = Continuing(REQUEST, walk, held, events)  # type: ignore[arg-type]
    with pytest.raises(UpstreamError) as info:
        await _drain(stream)
    assert info.value is CUT
    assert walk.served.attempts[0].outcome == "api_error after 2 chunks"


async def test_a_continuation_is_one_stream_with_summed_usage() -> None:
    walk = StubWalk(
        [
            WireEvent("openai", b"data: {}\n\n"),  # the new upstream's own framing: dropped
            TextDelta(" there"),
            Finish("stop", Usage(input_tokens=4, output_tokens=3)),
        ]
    )
    held: list[Event] = [TextDelta("echo:")]
    events = _events([TextDelta(" hello")], fail=CUT)
    stream = Continuing(REQUEST, walk, held, events)  # type: ignore[arg-type]
    got = await _drain(stream)
    assert got[0] == TextDelta(" hello")
    assert isinstance(got[1], Continued) and got[1].backend == "q"
    assert got[2:] == [TextDelta(" there"), Finish("stop", Usage(4, 2 + 3))]
    assert walk.served.continuations == 1 and walk.served.fallbacks == 1
    assert walk.verdicts == [False, True]  # the broken target, then the one that finished
