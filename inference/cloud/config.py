"""What a cloud client needs to know about its provider (no Django here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, TypeGuard

ANTHROPIC_VERSION = "2023-06-01"

ProviderKind = Literal["openai", "anthropic", "model-server"]
PROVIDER_KINDS: tuple[ProviderKind, ...] = ("openai", "anthropic", "model-server")


def is_provider_kind(value: str) -> TypeGuard[ProviderKind]:
    return value in PROVIDER_KINDS


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 5.0
    first_byte: float = 60.0  # the response head
    first_token: float = 120.0  # from the request to a stream's first content token
    stream_idle: float = 60.0
    total: float = 600.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int = 2
    backoff: float = 0.5  # first delay; doubles each retry, with jitter
    max_backoff: float = 8.0
    retry_after_cap: float = 20.0


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    name: str
    kind: ProviderKind
    base_url: str
    api_key: str = field(repr=False)
    extra_headers: dict[str, str] = field(default_factory=dict)
    timeouts: Timeouts = field(default_factory=Timeouts)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # Accepts a trailing assistant message and continues it (None: the kind's
    # default, Anthropic yes, OpenAI-compatible no): what mid-stream continuation needs.
    prefill: bool | None = None

    @property
    def accepts_prefill(self) -> bool:
        if self.prefill is not None:
            return self.prefill
        return self.kind in ("anthropic", "model-server")  # a model server's local models do

    def auth_headers(self) -> dict[str, str]:
        headers = dict(self.extra_headers)
        if self.kind == "anthropic":
            headers["x-api-key"] = self.api_key
            headers.setdefault("anthropic-version", ANTHROPIC_VERSION)
        else:
            headers["authorization"] = f"Bearer {self.api_key}"
        return headers

    def url(self, path: str) -> str:
        """OpenAI base URLs include /v1; Anthropic's do not."""
        if self.kind == "anthropic" and not self.base_url.endswith("/v1"):
            return f"{self.base_url}/v1{path}"
        return f"{self.base_url}{path}"
