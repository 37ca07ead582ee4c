"""What the two wire formats have in common, so the server handles them alike."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from .replies import Reply

DEFAULT_MODELS = ("gpt-4o-mini", "gpt-4o", "claude-haiku-4-5", "claude-opus-4-5")
CREATED = 1_700_000_000  # a fixed "created" for listed models keeps listings byte-stable


class InvalidBody(Exception):
    """The request is well-formed HTTP but not a valid API call (answered with 400)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(slots=True)
class StreamPlan:
    """A stream as framed SSE events, split where faults can strike.

    ``tokens`` holds one event per content token; faults count and cut there.
    """

    preamble: list[bytes]
    tokens: list[bytes]
    epilogue: list[bytes]
    terminator: list[bytes]
    malformed: bytes
    error: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)


class WireFormat(Protocol):
    name: str
    id_header: str
    overloaded_status: int

    def error_body(self, status: int, message: str | None, rid: str, model: str | None) -> bytes:
        """The protocol's error envelope for ``status`` (default message when None)."""
        ...

    def auth_error(self, key: str | None, rid: str) -> bytes: ...

    def context_length_body(self, tokens: int, rid: str) -> bytes: ...

    def content_policy_body(self, rid: str) -> bytes: ...

    def plan(self, body: dict[str, Any], words: int) -> Reply: ...

    def message_body(self, reply: Reply, model: str, rid: str) -> bytes: ...

    def stream(self, reply: Reply, model: str, rid: str, body: dict[str, Any]) -> StreamPlan: ...

    def models_body(self, models: list[str]) -> bytes: ...

    def model_body(self, model: str) -> bytes: ...


def positive_int(body: dict[str, Any], *names: str) -> int | None:
    """The first of ``names`` present in ``body``, validated as a positive integer."""
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
        raise InvalidBody(f"{name}: must be a positive integer", name)
    return None


def require_messages(body: dict[str, Any]) -> list[Any]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidBody("messages: Field required (a non-empty list)", "messages")
    return messages
