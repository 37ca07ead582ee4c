"""Re-encrypt every stored provider key with the newest Fernet key."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from routing import selectors
from routing.crypto import DecryptionError, Secret, fernet
from routing.models import CloudCredential, RoutingState


class Command(BaseCommand):
    help = (
        "Re-encrypt every provider API key with the first (newest) key of GATEWAY_FERNET_KEYS. "
        "Put the new key first and keep the old ones while this runs; once it has, the old "
        "keys can be removed. All or nothing: a key that cannot be decrypted aborts it."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            fernet()  # a malformed configured key is the key's fault, not the rows'
        except DecryptionError as exc:
            raise CommandError(f"{exc}; nothing was changed") from None
        with transaction.atomic():
            # Locked so a key set in the admin meanwhile is not overwritten with an old token.
            credentials = list(
                CloudCredential.objects.select_for_update()
                .select_related("provider")
                .order_by("pk")
            )
            tokens: dict[int, str] = {}
            unreadable: list[str] = []
            for credential in credentials:
                try:
                    tokens[credential.pk] = credential.api_key.rotated_token()
                except DecryptionError:
                    unreadable.append(credential.provider.name)
            if unreadable:
                # Names only: neither ciphertext nor keys belong in a terminal or a log.
                names = ", ".join(repr(name) for name in unreadable)
                raise CommandError(
                    f"cannot decrypt the API key of provider(s) {names} with any key in "
                    "GATEWAY_FERNET_KEYS; nothing was changed. Add the key they were encrypted "
                    "with (after the new one), or set those provider keys again in the admin."
                )
            for pk, token in tokens.items():
                # A queryset update skips save(): no auto_now stamp and no signals for what is
                # the same key. Secret(token=...) is written as is; a str would be taken for a
                # plain key and encrypted again.
                CloudCredential.objects.filter(pk=pk).update(api_key=Secret(token=token))
            if tokens:
                # Processes holding a snapshot keep the old ciphertext, which stops decrypting
                # once the old key is dropped: make them reload.
                RoutingState.bump()
                transaction.on_commit(selectors.invalidate)
        count = len(tokens)
        if not count:
            self.stdout.write("no provider keys are stored: nothing to rotate")
            return
        self.stdout.write(
            self.style.SUCCESS(f"rotated {count} provider key(s) to the newest Fernet key")
        )
