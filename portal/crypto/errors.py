"""Exceptions raised by :mod:`portal.crypto`.

Messages never contain plaintext or key material: they name the key id, or the
table, column and row id of the value that failed.
"""
from __future__ import annotations


class CryptoError(Exception):
    """Base class for every error raised by portal.crypto."""


class KeyringError(CryptoError):
    """The keyring source is missing, malformed or fails validation."""


class KeyringNotInstalledError(KeyringError):
    """An operation needed the process-wide keyring before install_keyring() ran."""


class EncryptionError(CryptoError):
    """A value could not be sealed, or an unsealed value was about to be written."""


class ConfigurationError(CryptoError):
    """A mapped model uses Encrypted columns or blind indexes in an unsupported way."""


class DecryptionError(CryptoError):
    """A stored envelope failed to open: edited, truncated, moved, or under an unknown key."""

    def __init__(self, table: str, column: str, row_id: object, reason: str) -> None:
        self.table = table
        self.column = column
        self.row_id = row_id
        self.reason = reason
        super().__init__(f"cannot decrypt {table}.{column} for row {row_id}: {reason}")
