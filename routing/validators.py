"""Validation of routing configuration values, shared by the admin's forms,
import_config and the models' own full_clean."""

from __future__ import annotations

import ipaddress
import re
from fnmatch import translate
from urllib.parse import SplitResult, urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator

model_name_validator = RegexValidator(
    r"^[^\s]+$", "Model names cannot contain whitespace.", code="invalid_model_name"
)

# A load-balanced group's name: short and plain, it shows in routes and the admin.
validate_group = RegexValidator(
    r"^[A-Za-z0-9_.-]+$", "A group name is letters, digits, '-', '_' or '.'.", code="bad_group"
)


def validate_pattern(value: str) -> None:
    if not value or any(c.isspace() for c in value):
        raise ValidationError(
            "A pattern cannot be empty or contain whitespace.", code="bad_pattern"
        )
    if _unclosed_bracket(value):
        raise ValidationError("Unbalanced [ ] in the pattern.", code="bad_pattern")
    try:
        re.compile(translate(value))
    except re.error as exc:
        raise ValidationError(f"Not a valid fnmatch pattern: {exc}", code="bad_pattern") from exc


def validate_patterns(value: object) -> None:
    """A list of fnmatch patterns (a client key's allowed models)."""
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise ValidationError("A list of fnmatch patterns is expected.", code="bad_patterns")
    for pattern in value:
        validate_pattern(pattern)


def _unclosed_bracket(pattern: str) -> bool:
    """A `[` that fnmatch would take literally for want of its `]`: a likely typo.
    Brackets are read as fnmatch reads them, so `[[]` (a literal "[") is fine."""
    i, n = 0, len(pattern)
    while i < n:
        i += 1
        if pattern[i - 1] != "[":
            continue
        j = i + (i < n and pattern[i] == "!")
        j += j < n and pattern[j] == "]"  # a "]" first in the set is one of its characters
        while j < n and pattern[j] != "]":
            j += 1
        if j >= n:
            return True
        i = j + 1
    return False


_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def validate_base_url(value: str) -> None:
    """http(s) and a host: single-label names too (Docker, Kubernetes services),
    which Django's URLField refuses. No credentials in it: those go in the key."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not _good_host(parts):
        raise ValidationError(
            "Enter an http:// or https:// URL with a host, e.g. https://api.example.com/v1.",
            code="bad_url",
        )
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValidationError(
            "Only scheme, host, port and path: credentials go in the API key, "
            "other settings in extra headers.",
            code="bad_url",
        )


def _good_host(parts: SplitResult) -> bool:
    try:
        parts.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError:
        return False
    host = parts.hostname or ""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(host) and all(_LABEL.match(label) for label in host.split("."))


# Credentials belong in the encrypted key, never in plain extra headers.
AUTH_HEADERS = {"authorization", "proxy-authorization", "x-api-key", "api-key"}
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP header name


def validate_extra_headers(value: object) -> None:
    if not isinstance(value, dict):
        raise ValidationError('Extra headers must be an object: {"Name": "value"}.')
    for name, header in value.items():
        if not isinstance(name, str) or not _TOKEN.match(name):
            raise ValidationError(f"{name!r} is not a valid header name.")
        if not isinstance(header, str) or "\n" in header or "\r" in header:
            raise ValidationError(f"The value of {name!r} must be a one-line string.")
        if name.lower() in AUTH_HEADERS:
            raise ValidationError(
                f"{name!r} carries a secret: set it as the provider's API key, which is "
                "stored encrypted (extra headers are stored and exported in plain text)."
            )
