"""A provider row as the cloud clients see it: `inference`'s ProviderConfig, key decrypted.

The one place a stored provider becomes something that can call out, so every
check that a raw UPDATE could have bypassed (key, headers, kind) happens here,
as a CredentialError, before any request is built.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError

from inference.cloud.config import ProviderConfig, RetryPolicy, Timeouts, is_provider_kind

from .models import CredentialError, Provider
from .validators import validate_extra_headers


def provider_config(provider: Provider, api_key: str | None = None) -> ProviderConfig:
    """The client-side view of a provider, with its key decrypted (or an error).

    `api_key`: a key typed but not saved yet (the form's connection test).
    """
    key = api_key
    if key is None:
        credential = getattr(provider, "credential", None)
        if credential is None:
            raise CredentialError(f"provider {provider.name!r} has no API key set")
        key = credential.reveal()
    if any(c in key for c in "\r\n\0"):
        raise CredentialError(f"the API key of provider {provider.name!r} holds a line break")
    try:
        validate_extra_headers(provider.extra_headers or {})
    except ValidationError as exc:  # written around the admin and import (a raw UPDATE)
        raise CredentialError(
            f"provider {provider.name!r} has unusable extra headers: {' '.join(exc.messages)}"
        ) from None
    kind = provider.kind
    if not is_provider_kind(kind):  # the column's choices; a raw UPDATE could write any
        raise CredentialError(f"provider {provider.name!r} has an unknown kind {kind!r}")
    return ProviderConfig(
        name=provider.name,
        kind=kind,
        base_url=provider.effective_base_url,
        api_key=key,
        extra_headers={str(k): str(v) for k, v in (provider.extra_headers or {}).items()},
        timeouts=Timeouts(
            connect=provider.connect_timeout,
            first_byte=provider.first_byte_timeout,
            first_token=provider.first_token_timeout,
            stream_idle=provider.stream_idle_timeout,
            total=provider.total_timeout,
        ),
        retry=RetryPolicy(
            max_retries=provider.max_retries,
            backoff=provider.retry_backoff,
            retry_after_cap=provider.retry_after_cap,
        ),
        prefill=provider.accepts_prefill,
    )
