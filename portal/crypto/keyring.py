"""Key material for field encryption and blind indexes.

The keyring JSON looks like::

    {"primary": "k1", "keys": {"k1": "<base64 32 bytes>"},
     "index_primary": "i1", "index_keys": {"i1": "<base64 32 bytes>"}}

Encryption keys (``keys``) and blind-index keys (``index_keys``) are kept apart
so that an index key leak does not expose ciphertexts and vice versa. Old keys
stay in the keyring after rotation until ``rotation_status`` reports that no
value uses them any more.
"""
from __future__ import annotations

import base64
import binascii
import json
import os
import re
import secrets
import threading
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import KeyringError, KeyringNotInstalledError

KEY_BYTES = 32
_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_FIELDS = {"primary", "keys", "index_primary", "index_keys"}


class Keyring:
    """Immutable set of named AES-256 keys and HMAC index keys."""

    __slots__ = ("primary", "index_primary", "_keys", "_index_keys", "_aeads")

    def __init__(
        self,
        primary: str,
        keys: Mapping[str, bytes],
        index_primary: str,
        index_keys: Mapping[str, bytes],
    ) -> None:
        _check_key_set("keys", primary, keys, "primary")
        _check_key_set("index_keys", index_primary, index_keys, "index_primary")
        if set(keys.values()) & set(index_keys.values()):
            raise KeyringError("index keys must differ from encryption keys")
        self.primary = primary
        self.index_primary = index_primary
        self._keys = MappingProxyType(dict(keys))
        self._index_keys = MappingProxyType(dict(index_keys))
        # One AES-GCM object per key: building one runs the key schedule, a third of a field's decryption.
        self._aeads = MappingProxyType({key_id: AESGCM(key) for key_id, key in self._keys.items()})

    @classmethod
    def load(cls, source: str) -> Keyring:
        """Load from a file path, or from the JSON text itself when it starts with ``{``."""
        text = source if source.lstrip().startswith("{") else _read_file(source)
        try:
            data = json.loads(text)
        except ValueError:
            raise KeyringError("keyring is not valid JSON") from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any) -> Keyring:
        if not isinstance(data, dict):
            raise KeyringError("keyring JSON must be an object")
        unknown = sorted(set(data) - _FIELDS)
        missing = sorted(_FIELDS - set(data))
        if unknown:
            raise KeyringError(f"keyring has unknown fields: {', '.join(unknown)}")
        if missing:
            raise KeyringError(f"keyring is missing fields: {', '.join(missing)}")
        return cls(
            primary=data["primary"],
            keys=_decode_keys("keys", data["keys"]),
            index_primary=data["index_primary"],
            index_keys=_decode_keys("index_keys", data["index_keys"]),
        )

    @classmethod
    def generate(cls) -> Keyring:
        """A fresh keyring with one encryption key ``k1`` and one index key ``i1``."""
        return cls("k1", {"k1": _new_key()}, "i1", {"i1": _new_key()})

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    @property
    def index_key_ids(self) -> tuple[str, ...]:
        return tuple(self._index_keys)

    def key(self, key_id: str) -> bytes:
        """Encryption key by id; raises KeyError for unknown ids (callers add context)."""
        return self._keys[key_id]

    def aead(self, key_id: str) -> AESGCM:
        """The AES-256-GCM cipher of an encryption key; raises KeyError for unknown ids."""
        return self._aeads[key_id]

    def index_key(self, key_id: str) -> bytes:
        return self._index_keys[key_id]

    def rotated(self) -> Keyring:
        """A copy with a new primary encryption key and a new primary index key.

        Old keys are kept so existing values stay readable until ``rotate`` has run.
        """
        key_id = _next_id("k", self._keys)
        index_id = _next_id("i", self._index_keys)
        return Keyring(
            key_id,
            {**self._keys, key_id: _new_key()},
            index_id,
            {**self._index_keys, index_id: _new_key()},
        )

    def to_json(self) -> str:
        """Serialise, including key material: write only to protected storage."""
        return json.dumps(
            {
                "primary": self.primary,
                "keys": _encode_keys(self._keys),
                "index_primary": self.index_primary,
                "index_keys": _encode_keys(self._index_keys),
            },
            indent=2,
        )

    def __repr__(self) -> str:
        return (
            f"Keyring(primary={self.primary!r}, keys={list(self._keys)!r}, "
            f"index_primary={self.index_primary!r}, index_keys={list(self._index_keys)!r})"
        )


def generate_keyring_json() -> str:
    """JSON text of a fresh keyring (one encryption key, one index key)."""
    return Keyring.generate().to_json()


def write_dev_keyring(path: str | os.PathLike[str]) -> bool:
    """Create a development keyring file with mode 0600 unless one already exists.

    Returns True when a file was written. An existing file is never overwritten:
    replacing it would make every stored value undecryptable.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(generate_keyring_json())
    os.chmod(target, 0o600)
    return True


_active: Keyring | None = None
_active_lock = threading.Lock()


def install_keyring(keyring: Keyring) -> None:
    """Make ``keyring`` the process-wide keyring used by the ORM events and rotation."""
    if not isinstance(keyring, Keyring):
        raise TypeError("install_keyring() needs a Keyring")
    global _active
    with _active_lock:
        _active = keyring


def active_keyring() -> Keyring:
    """The installed keyring; raises KeyringNotInstalledError before install_keyring()."""
    keyring = _active
    if keyring is None:
        raise KeyringNotInstalledError(
            "no keyring installed: call portal.crypto.install_keyring(Keyring.load(...)) "
            "at application start before reading or writing encrypted columns"
        )
    return keyring


def _read_file(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeyringError(f"keyring file not found: {path}") from None
    except OSError as exc:
        raise KeyringError(f"cannot read keyring file {path}: {exc.strerror}") from None


def _decode_keys(field: str, raw: Any) -> dict[str, bytes]:
    if not isinstance(raw, dict) or not raw:
        raise KeyringError(f"keyring field {field!r} must be a non-empty object")
    return {key_id: _decode_key(field, key_id, value) for key_id, value in raw.items()}


def _decode_key(field: str, key_id: Any, value: Any) -> bytes:
    if not isinstance(key_id, str) or not _KEY_ID.match(key_id):
        raise KeyringError(f"keyring field {field!r} has an invalid key id (use 1-32 of A-Z a-z 0-9 _ -)")
    if not isinstance(value, str):
        raise KeyringError(f"key {key_id!r} in {field!r} must be a base64 string")
    try:
        key = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise KeyringError(f"key {key_id!r} in {field!r} is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise KeyringError(f"key {key_id!r} in {field!r} must decode to {KEY_BYTES} bytes, got {len(key)}")
    return key


def _check_key_set(field: str, primary: Any, keys: Mapping[str, bytes], primary_field: str) -> None:
    if not keys:
        raise KeyringError(f"keyring field {field!r} must not be empty")
    for key_id, key in keys.items():
        if not isinstance(key_id, str) or not _KEY_ID.match(key_id):
            raise KeyringError(f"keyring field {field!r} has an invalid key id")
        if not isinstance(key, bytes) or len(key) != KEY_BYTES:
            raise KeyringError(f"key {key_id!r} in {field!r} must be {KEY_BYTES} bytes")
    if len(set(keys.values())) != len(keys):
        raise KeyringError(f"keyring field {field!r} contains the same key under two ids")
    if not isinstance(primary, str) or primary not in keys:
        raise KeyringError(f"keyring {primary_field!r} must name a key in {field!r}")


def _encode_keys(keys: Mapping[str, bytes]) -> dict[str, str]:
    return {key_id: base64.b64encode(key).decode("ascii") for key_id, key in keys.items()}


def _new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def _next_id(prefix: str, existing: Mapping[str, bytes]) -> str:
    number = len(existing) + 1
    while f"{prefix}{number}" in existing:
        number += 1
    return f"{prefix}{number}"
