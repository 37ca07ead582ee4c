"""Fault injection, chosen by the requested model name.

One server serves every scenario: the ``model`` field of a request picks how it
misbehaves, so a test configures a backend's upstream model name and nothing
else. Any name not listed below is healthy. The ``fault-`` prefix is optional
for the named (non-numeric) faults, so ``cut-after:3`` works too.

=================================  ============================================================
Model name                         Effect (both protocols, streaming or not, unless noted)
=================================  ============================================================
``fault-<code>``                   Always answer HTTP ``<code>`` (4xx/5xx) in the protocol's
                                   error envelope, e.g. ``fault-503``, ``fault-500``,
                                   ``fault-401``, ``fault-404``, ``fault-429`` (no
                                   ``Retry-After``), ``fault-529`` (Anthropic
                                   ``overloaded_error``).
``fault-<code>:S``                 Same, with ``Retry-After: S`` (seconds; may be fractional,
                                   which the SDKs honour), e.g. ``fault-429:2``.
``fault-<code>-once[:S]``          The first request for this model name fails, later ones are
                                   healthy (``fault-500-once``). Attempts are counted per model
                                   name on every API path; ``reset()`` rearms it.
``fault-context-length``           400: OpenAI ``code: context_length_exceeded``, ``param:
                                   messages`` / Anthropic ``invalid_request_error`` "prompt is
                                   too long: ...".
``fault-content-policy``           400 refusing the content: OpenAI ``code:
                                   content_policy_violation`` / Anthropic
                                   ``invalid_request_error`` naming the content policy.
``fault-reset``                    Read the request, then abort the TCP connection with RST
                                   before writing anything (the client sees ECONNRESET).
``fault-close``                    Read the request, then close cleanly (FIN) without an answer
                                   ("server disconnected without sending a response").
``fault-hang``                     Accept and read the request, never answer; the connection
                                   stays open until the client gives up (or the server stops).
``fault-slow-first-token:S``       Wait S seconds before the first content token. Streams send
                                   the headers and the preamble (OpenAI role chunk; Anthropic
                                   ``message_start``, ``content_block_start``, ``ping``) at
                                   once; non-streaming answers are delayed as a whole.
``fault-slow-tokens:S``            Wait S seconds before every content token (slow but healthy;
                                   non-streaming waits S * tokens).
``fault-slow-body:S``              Non-streaming: the headers and half the body at once, the
                                   rest S seconds later (a slow body after a prompt head).
                                   Streams: as ``slow-first-token:S``.
``fault-cut-after:N``              Streams: after N content tokens close the connection (FIN)
                                   without the SSE terminator or the last zero-size chunk.
                                   Non-streaming: headers and half the body, then close.
``fault-stall-after:N``            Streams: after N content tokens send nothing more but keep
                                   the connection open. Non-streaming: headers and half the
                                   body, then silence.
``fault-malformed[:N]``            Streams: after N (default 1) content tokens one ``data:``
                                   line that is not JSON, then the rest of the stream as usual.
                                   Non-streaming: a 200 whose body is not JSON.
``fault-no-done``                  OpenAI streams end cleanly after the finish (and usage)
                                   chunk without ``data: [DONE]``; Anthropic streams end after
                                   ``message_delta`` without ``message_stop``. Non-streaming:
                                   healthy.
``fault-stream-overloaded[:N]``    Streams: after N (default 0) content tokens an in-band error
                                   in the 200 stream, then a clean end: Anthropic ``event:
                                   error`` with ``overloaded_error``; OpenAI ``data: {"error":
                                   {...}}`` (the SDK raises ``APIError``). Non-streaming: 529
                                   (Anthropic) or 503 (OpenAI).
``fault-flaky:<pattern>``          Attempt k (1-based, per model name) behaves as
                                   ``pattern[(k-1) % len(pattern)]``: ``.`` healthy, ``x`` 503,
                                   ``5`` 500, ``4`` 429, ``r`` reset, ``c`` close; e.g.
                                   ``fault-flaky:xx.``.
``fault-no-prefill``               A model that refuses assistant prefill: a request whose last
                                   message is the assistant's gets 400 ("...does not support
                                   assistant message prefill..."); others are healthy.
``fault-down-for:S``               A flapping outage: 503 from the first request for this model
                                   name until S seconds later, then healthy (``reset()``
                                   rearms it).
``words:N``                        Healthy, with N-word answers instead of ``reply_words``
                                   (long streams for benchmarks).
=================================  ============================================================

A request whose last message is the assistant's (a prefill) is continued, as
Anthropic's API and vLLM's ``continue_final_message`` do: the answer is the
planned reply after the words of the prefill, when it starts with them.

Besides model names, ``FakeUpstream.fail_next()`` (HTTP: ``POST /_control/fail``) makes
the next N requests whose model matches a glob pattern fail with a status or any
fault above; those rules are checked before the model name.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache


class Kind(Enum):
    HEALTHY = "healthy"
    STATUS = "status"
    CONTEXT_LENGTH = "context-length"
    CONTENT_POLICY = "content-policy"
    RESET = "reset"
    CLOSE = "close"
    HANG = "hang"
    SLOW_FIRST_TOKEN = "slow-first-token"
    SLOW_TOKENS = "slow-tokens"
    SLOW_BODY = "slow-body"
    CUT_AFTER = "cut-after"
    STALL_AFTER = "stall-after"
    MALFORMED = "malformed"
    NO_DONE = "no-done"
    STREAM_OVERLOADED = "stream-overloaded"
    FLAKY = "flaky"
    NO_PREFILL = "no-prefill"
    DOWN_FOR = "down-for"


@dataclass(frozen=True, slots=True)
class Fault:
    """A parsed behaviour. ``number`` is the fault's parameter (seconds or a count)."""

    kind: Kind
    status: int = 0
    number: float | None = None
    once: bool = False
    pattern: str = ""
    words: int | None = None  # only for healthy ``words:N``

    @property
    def count(self) -> int:
        return int(self.number or 0)


HEALTHY = Fault(Kind.HEALTHY)

# Faults with a parameter that defaults when omitted; None means it is required.
_DEFAULT_PARAM: dict[Kind, float | None] = {
    Kind.SLOW_FIRST_TOKEN: None,
    Kind.SLOW_TOKENS: None,
    Kind.SLOW_BODY: None,
    Kind.CUT_AFTER: None,
    Kind.STALL_AFTER: None,
    Kind.MALFORMED: 1,
    Kind.STREAM_OVERLOADED: 0,
    Kind.DOWN_FOR: None,
}
_NO_PARAM = {
    Kind.CONTEXT_LENGTH, Kind.CONTENT_POLICY, Kind.RESET, Kind.CLOSE, Kind.HANG, Kind.NO_DONE,
    Kind.NO_PREFILL,
}  # fmt: skip
_BY_NAME = {kind.value: kind for kind in Kind if kind not in (Kind.HEALTHY, Kind.STATUS)}
_STATUS_RE = re.compile(r"fault-(\d{3})(-once)?")

FLAKY_CHARS: dict[str, Fault] = {
    ".": HEALTHY,
    "x": Fault(Kind.STATUS, status=503),
    "5": Fault(Kind.STATUS, status=500),
    "4": Fault(Kind.STATUS, status=429),
    "r": Fault(Kind.RESET),
    "c": Fault(Kind.CLOSE),
}


class FaultSpecError(ValueError):
    """A model name looked like a fault but its parameter is unusable."""


@lru_cache(maxsize=4096)
def parse_fault(model: str) -> Fault:
    """The behaviour a model name asks for (cached: the hot path sees few distinct names)."""
    name, sep, raw = model.partition(":")
    if name == "words" and sep:
        return Fault(Kind.HEALTHY, words=_int(raw, model, minimum=1))
    if match := _STATUS_RE.fullmatch(name):
        status = int(match.group(1))
        if not 400 <= status <= 599:
            raise FaultSpecError(f"{model}: status must be 4xx or 5xx")
        retry_after = _number(raw, model) if sep else None
        return Fault(Kind.STATUS, status=status, number=retry_after, once=bool(match.group(2)))
    kind = _BY_NAME.get(name.removeprefix("fault-"))
    if kind is None:
        return HEALTHY
    if kind is Kind.FLAKY:
        if not raw or any(ch not in FLAKY_CHARS for ch in raw):
            raise FaultSpecError(f"{model}: pattern chars are {''.join(FLAKY_CHARS)}")
        return Fault(kind, pattern=raw)
    if kind in _NO_PARAM:
        return Fault(kind)
    if sep:
        return Fault(kind, number=_number(raw, model))
    default = _DEFAULT_PARAM[kind]
    if default is None:
        raise FaultSpecError(f"{model}: needs a parameter, e.g. {name}:1")
    return Fault(kind, number=default)


def _number(raw: str, model: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise FaultSpecError(f"{model}: {raw!r} is not a number") from None
    if value < 0:
        raise FaultSpecError(f"{model}: parameter must be >= 0")
    return value


def _int(raw: str, model: str, *, minimum: int = 0) -> int:
    value = _number(raw, model)
    if value != int(value) or value < minimum:
        raise FaultSpecError(f"{model}: parameter must be an integer >= {minimum}")
    return int(value)


PREFILL_REFUSED = (
    "This model does not support assistant message prefill. "
    "The conversation must end with a user message."
)


def resolve(
    fault: Fault, attempt: int, *, down_since: float = 0.0, now: float = 0.0, prefill: bool = False
) -> Fault:
    """Collapse per-attempt and per-time faults (once, flaky, down-for, no-prefill) for
    the ``attempt``-th request (1-based); ``down_since``: when this model name was first
    asked (monotonic), ``prefill``: the request ends with an assistant message."""
    if fault.kind is Kind.DOWN_FOR:
        return Fault(Kind.STATUS, status=503) if now - down_since < (fault.number or 0) else HEALTHY
    if fault.kind is Kind.NO_PREFILL:
        return fault if prefill else HEALTHY
    if fault.once:
        return fault if attempt == 1 else HEALTHY
    if fault.kind is Kind.FLAKY:
        return FLAKY_CHARS[fault.pattern[(attempt - 1) % len(fault.pattern)]]
    return fault


@dataclass(slots=True)
class FailRule:
    """A control-plane rule: the next ``remaining`` matching requests get ``fault``."""

    pattern: str
    fault: Fault
    remaining: int | None  # None: until cleared

    def take(self, model: str) -> bool:
        if self.remaining == 0 or not fnmatch.fnmatchcase(model, self.pattern):
            return False
        if self.remaining is not None:
            self.remaining -= 1
        return True

    def describe(self) -> dict[str, object]:
        return {
            "model": self.pattern,
            "kind": self.fault.kind.value,
            "status": self.fault.status or None,
            "remaining": self.remaining,
        }


def rule_fault(status: int | None, retry_after: float | None, fault: str | None) -> Fault:
    """The fault a control rule injects: a fault spec string wins over a bare status."""
    if fault:
        parsed = parse_fault(fault)
        if parsed.kind is Kind.HEALTHY and parsed.words is None:
            raise FaultSpecError(f"unknown fault {fault!r}")
        # A rule already counts its own attempts, so "once" would only confuse it.
        if parsed.once:
            return Fault(Kind.STATUS, status=parsed.status, number=parsed.number)
        return parsed
    code = 503 if status is None else status
    if not 400 <= code <= 599:
        raise FaultSpecError("status must be 4xx or 5xx")
    return Fault(Kind.STATUS, status=code, number=retry_after)
