"""AES-256-GCM envelopes: ``v1:<key_id>:<b64url nonce>:<b64url ciphertext+tag>``.

The associated data ``f"{table}.{column}.{row_id}"`` binds each envelope to its
cell, so a ciphertext copied to another row or column fails authentication.
"""
from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag

from .errors import DecryptionError
from .keyring import Keyring

VERSION = "v1"
NONCE_BYTES = 12
TAG_BYTES = 16


def associated_data(table: str, column: str, row_id: object) -> bytes:
    return f"{table}.{column}.{row_id}".encode()


def envelope_prefix(key_id: str) -> str:
    """Text every envelope sealed under ``key_id`` starts with (used for SQL counts)."""
    return f"{VERSION}:{key_id}:"


def seal(keyring: Keyring, plaintext: bytes, table: str, column: str, row_id: object) -> str:
    """Encrypt under the primary key with a fresh random 96-bit nonce."""
    nonce = os.urandom(NONCE_BYTES)
    sealed = keyring.aead(keyring.primary).encrypt(nonce, plaintext, associated_data(table, column, row_id))
    return f"{envelope_prefix(keyring.primary)}{_b64(nonce)}:{_b64(sealed)}"


def open_envelope(keyring: Keyring, envelope: str, table: str, column: str, row_id: object) -> bytes:
    """Decrypt ``envelope``; any malformation or authentication failure raises DecryptionError."""

    def fail(reason: str) -> DecryptionError:
        return DecryptionError(table, column, row_id, reason)

    parts = envelope.split(":")
    if len(parts) != 4:
        raise fail("malformed envelope (expected 4 fields)")
    version, key_id, nonce_text, sealed_text = parts
    if version != VERSION:
        raise fail("unsupported envelope version")
    if key_id not in keyring.key_ids:
        raise fail(f"unknown key id {key_id!r}")
    nonce = _unb64(nonce_text, fail)
    sealed = _unb64(sealed_text, fail)
    if len(nonce) != NONCE_BYTES:
        raise fail("malformed envelope (bad nonce length)")
    if len(sealed) < TAG_BYTES:
        raise fail("malformed envelope (ciphertext too short)")
    try:
        return keyring.aead(key_id).decrypt(nonce, sealed, associated_data(table, column, row_id))
    except InvalidTag:
        raise fail("authentication failed (edited, truncated, or copied from another row or column)") from None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str, fail) -> bytes:
    """Strict unpadded base64url: rejects foreign characters and non-canonical encodings."""
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise fail("malformed envelope (bad base64)") from None
    if _b64(data) != text:  # also refuses what the lenient decoder skipped over (foreign characters)
        raise fail("malformed envelope (non-canonical base64)")
    return data
