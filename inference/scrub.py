"""Secrets and internal addresses out of text that leaves the process.

An upstream's error text is relayed to clients and written to logs, and some
upstreams echo the request's `Authorization` header back in it. Two pure
functions, applied where such text becomes a client's message
(`gateway.errors.error_body`, relayed error events) and in every log record
(`RedactingFilter` on the log handler):

- `secrets`: the provider keys this process has decrypted, and anything that
  looks like a credential (`sk-...`, `gw-...`, `Bearer <token>`,
  `x-api-key: <token>`), become `[redacted]`. For clients and logs alike.
- `for_client`: for an upstream's text, also replaces internal addresses (IPs,
  host:port, URLs) with the provider's name. The server log keeps them: an
  operator needs to know which address failed, a client must not learn the
  network behind the gateway.

Known keys are remembered per process (a provider key is registered when it
is decrypted, `routing.crypto.Secret.reveal`); there are a handful of them.
"""

from __future__ import annotations

import logging
import re
import threading

REDACTED = "[redacted]"
_MIN_KEY = 8  # shorter "keys" (tests, placeholders) would redact ordinary words

_TOKENS = re.compile(
    # OpenAI/Anthropic-style keys, and whole gateway keys (not the "gw-Ab12Cd34"
    # prefix that names a key in messages)
    r"(?i)\bsk-[A-Za-z0-9_\-]{8,}|\bgw-[A-Za-z0-9_\-]{20,}"
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/=\-]{6,}"  # an echoed Authorization header
    r"|(?i:x-api-key|api-key|api_key)[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9._~+/=\-]{6,}"
)
_URL = re.compile(r"\b[a-z][a-z0-9+.\-]*://[^\s'\"<>]+", re.IGNORECASE)
_IPV4 = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?\b")
_IPV6 = re.compile(r"\[[0-9a-fA-F:.%\w]*:[0-9a-fA-F:.%\w]*\](?::\d{1,5})?")
# A host name starts with a letter ("12:30" is a time, not an address).
_HOST_PORT = re.compile(r"\b[a-zA-Z][a-zA-Z0-9\-]*(?:\.[a-zA-Z0-9\-]+)*:\d{1,5}\b")

_known: set[str] = set()
_known_pattern: re.Pattern[str] | None = None
_lock = threading.Lock()


def remember(secret: str) -> None:
    """A key this process sends upstream: never to be shown again, anywhere."""
    global _known_pattern
    secret = secret.strip()
    if len(secret) < _MIN_KEY or secret in _known:
        return
    with _lock:
        _known.add(secret)
        alternatives = sorted(_known, key=len, reverse=True)
        _known_pattern = re.compile("|".join(re.escape(s) for s in alternatives))


def secrets(text: str) -> str:
    if _known_pattern is not None:
        text = _known_pattern.sub(REDACTED, text)
    return _TOKENS.sub(REDACTED, text)


def for_client(text: str, provider: str = "") -> str:
    """What a client may read of an upstream's message."""
    name = f"<{provider}>" if provider else "<upstream>"
    text = secrets(text)
    for pattern in (_URL, _IPV6, _IPV4, _HOST_PORT):
        text = pattern.sub(name, text)
    return text


class RedactingFilter(logging.Filter):
    """On the log handler: every record's text (and traceback) without secrets."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: let the handler report it
            return True
        cleaned = secrets(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = secrets(record.exc_text)
        return True
