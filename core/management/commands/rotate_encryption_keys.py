"""Re-encrypt every stored secret under the first key of FLEET_ENCRYPTION_KEYS."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from core import services
from core.change_context import ChangeContext
from core.crypto import DecryptionError


class Command(BaseCommand):
    help = (
        "Rotation without downtime: 1) put a new key first in FLEET_ENCRYPTION_KEYS and keep the "
        "old ones after it, 2) restart the processes, 3) run this command, 4) drop the old keys."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            rotated, current = services.rotate_secrets(
                ChangeContext.system("rotate_encryption_keys", reason="encryption key rotation")
            )
        except DecryptionError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(
            f"Re-encrypted {rotated} secret(s) under the first key; {current} already used it. "
            "Old keys can be removed from FLEET_ENCRYPTION_KEYS once every process has restarted."
        )
