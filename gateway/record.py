"""The record of one API request (`RequestContext`): what was asked, by whom,
what came back, and when. Its life cycle (open, admit, finish, listeners) is in
gateway.context; this module holds only the data, so that what reads a record
(auth, costs, the request log) need not import that life cycle."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from inference import scrub
from inference.errors import GatewayError
from inference.types import Event, Finish, PromptUsage, is_content

from .errors import Protocol


@dataclass
class RequestContext:
    protocol: Protocol
    endpoint: str
    started: float = field(default_factory=time.monotonic)
    started_at: float = field(default_factory=time.time)
    api_key: Any = None  # set by gateway.keys.auth once the caller is known
    requested_model: str = ""
    stream: bool = False
    served: Any = None  # routing.failover.Served
    status: int = 200
    error_type: str = ""
    error_message: str = ""
    cost: Decimal | None = None  # USD, once computed (gateway.costs)
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0  # of input_tokens, read from a prompt cache
    first_token_at: float | None = None
    finished: bool = False
    ended: float | None = None  # when finish() was called
    # Set when a graceful shutdown cuts the request short (gateway.edge.drain).
    interrupted: GatewayError | None = None
    # Content events seen: the output tokens of a stream cut before its usage
    # came (each upstream delta, and each local one, is about one token).
    content_events: int = 0

    def observe(self, event: Event) -> None:
        if is_content(event):
            self.content_events += 1
            if self.first_token_at is None:
                self.first_token_at = time.monotonic()
        elif isinstance(event, Finish):
            self.input_tokens = event.usage.input_tokens
            self.output_tokens = event.usage.output_tokens
            self.cached_tokens = event.usage.cached_tokens
        elif isinstance(event, PromptUsage):
            self.input_tokens = event.input_tokens

    def fail(self, error: GatewayError, status: int) -> None:
        self.status = status
        self.error_type = error.code or error.kind
        self.error_message = scrub.secrets(error.message)  # shown in the admin
        self.served = error.served or self.served

    @property
    def latency_ms(self) -> float:
        end = self.ended if self.ended is not None else time.monotonic()
        return (end - self.started) * 1000

    @property
    def ttft_ms(self) -> float | None:
        if self.first_token_at is None:
            return None
        return (self.first_token_at - self.started) * 1000
