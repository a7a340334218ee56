"""Encryption at rest for stored secrets (MultiFernet over FLEET_ENCRYPTION_KEYS)."""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class DecryptionError(RuntimeError):
    """A stored value cannot be decrypted with any configured key."""


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in keys])


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.FLEET_ENCRYPTION_KEYS))


def encrypt(plaintext: str) -> str:
    return fernet().encrypt(plaintext.encode("utf-8")).decode("ascii")


def decrypt(ciphertext: str) -> str:
    try:
        return fernet().decrypt(ciphertext.encode("ascii")).decode("utf-8")
    except InvalidToken:
        raise DecryptionError(
            "A stored secret cannot be decrypted: the key that encrypted it is no longer in "
            "FLEET_ENCRYPTION_KEYS. Put the old key back (after the new first key) and run "
            "`manage.py rotate_encryption_keys`."
        ) from None


def rotate(ciphertext: str) -> str:
    """Re-encrypt under the first key; raises DecryptionError when no key fits."""
    try:
        return fernet().rotate(ciphertext.encode("ascii")).decode("ascii")
    except InvalidToken:
        raise DecryptionError(
            "A stored secret cannot be decrypted with any configured key."
        ) from None


def is_current(ciphertext: str) -> bool:
    """True when the first (current) key encrypted this value."""
    keys: list[str] = list(settings.FLEET_ENCRYPTION_KEYS)
    first = Fernet(keys[0])
    try:
        first.decrypt(ciphertext.encode("ascii"))
    except InvalidToken:
        return False
    return True
