"""Fernet encryption at rest for provider API keys.

The column holds only ciphertext. Reading a row never decrypts: the field
yields a `Secret`, revealed explicitly where a key is about to be sent, so a
wrong or missing key fails there with an error naming the provider instead of
passing ciphertext on as if it were the key. `Secret` never prints its value.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.db import models

from inference import scrub


class DecryptionError(Exception):
    """A stored secret cannot be decrypted with the configured keys."""


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    if not keys:
        raise DecryptionError("no Fernet keys are configured (GATEWAY_FERNET_KEYS)")
    return MultiFernet([_one(i, k) for i, k in enumerate(keys, 1)])


def _one(position: int, key: str) -> Fernet:
    try:
        return Fernet(key.encode())
    except (ValueError, TypeError):
        # Which entry, never what it holds.
        raise DecryptionError(
            f"GATEWAY_FERNET_KEYS entry {position} is not a Fernet key (32 url-safe "
            "base64-encoded bytes; make one with cryptography's Fernet.generate_key())"
        ) from None


def check_keys(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """A Django system check: malformed keys are found at start, not at a request."""
    from django.core.checks import Error

    try:
        fernet()
    except DecryptionError as exc:
        return [Error(str(exc), id="routing.E001")]
    return []


def fernet() -> MultiFernet:
    """Newest key first: it encrypts; every key decrypts (for rotation)."""
    return _fernet(tuple(settings.GATEWAY_FERNET_KEYS))


class Secret:
    """A secret value that is never shown: not in repr, str, logs or templates."""

    __slots__ = ("_plain", "_token")

    def __init__(self, *, token: str | None = None, plain: str | None = None) -> None:
        self._token = token
        self._plain = plain

    @property
    def token(self) -> str:
        """The ciphertext, encrypting a newly set value with the newest key."""
        if self._token is None:
            self._token = fernet().encrypt((self._plain or "").encode()).decode()
        return self._token

    def reveal(self) -> str:
        if self._plain is not None:
            plain = self._plain
        else:
            try:
                plain = fernet().decrypt(self.token.encode()).decode()
            except (InvalidToken, ValueError) as exc:
                message = "cannot be decrypted with the configured Fernet keys"
                raise DecryptionError(message) from exc
        # Revealed to be sent upstream: from now on scrubbed from every error and log line.
        scrub.remember(plain)
        return plain

    def rotated_token(self) -> str:
        """The same secret encrypted with the newest key."""
        try:
            return fernet().rotate(self.token.encode()).decode()
        except (InvalidToken, ValueError) as exc:
            raise DecryptionError("cannot be decrypted with the configured Fernet keys") from exc

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other.token == self.token

    def __hash__(self) -> int:
        return hash(self.token)


# Marks ciphertext in serialized data (dumpdata/loaddata), so that loading a
# dump keeps the token instead of encrypting it again as if it were a key.
SERIALIZED_PREFIX = "fernet:"


if TYPE_CHECKING:
    # django-stubs' fields are generic (the type set, the type read); Django's
    # are not at run time, where the subscript would need django-stubs-ext's
    # monkeypatch of Django, which the gateway does not install for a checker.
    _SecretText = models.TextField[Secret | str, Secret]
else:
    _SecretText = models.TextField


class EncryptedSecretField(_SecretText):
    """A TextField that stores Fernet ciphertext and yields `Secret` objects."""

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> Secret | None:
        return None if value is None else Secret(token=value)

    def to_python(self, value: Any) -> Secret | None:
        if value is None or isinstance(value, Secret):
            return value
        value = str(value)
        if value.startswith(SERIALIZED_PREFIX):
            return Secret(token=value.removeprefix(SERIALIZED_PREFIX))
        return Secret(plain=value)

    def get_prep_value(self, value: Any) -> str | None:
        secret = self.to_python(value)
        return None if secret is None else secret.token

    def value_to_string(self, obj: models.Model) -> str:
        # Serialization (dumpdata) carries ciphertext, never the plain key.
        secret = self.to_python(self.value_from_object(obj))
        return "" if secret is None else SERIALIZED_PREFIX + secret.token
