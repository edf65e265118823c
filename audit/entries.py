"""Audit entries, their canonical bytes (each entry's Merkle leaf, see audit/merkle.py) and the Ed25519 keys.

An entry is a sequence number and an event; its leaf hash is SHA-256(0x00 ‖ canonical JSON of
{seq, event}). What binds the entries together is the RFC 9162 tree over the leaves and the signed
C2SP tree checkpoints of it (audit/tree_checkpoints.py), signed with the key defined here.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any, TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from audit.events import AuditEvent
from audit.merkle import leaf_hash as merkle_leaf_hash

T = TypeVar("T")

def parse_json(data: str | bytes) -> Any:
    """``json.loads``, with nesting too deep for the parser reported as the ValueError any other
    malformed input raises: a hostile file must get "malformed", never a crash."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply to read") from None


def canonical_json(value: Any) -> bytes:
    """Sorted-key compact UTF-8 JSON: the single byte form that is hashed and signed."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def key_fingerprint(raw_public_key: bytes) -> str:
    """Short key id: first 16 hex digits of SHA-256 over the raw 32-byte public key."""
    return sha256_hex(raw_public_key)[:16]


class VerifyKey:
    """An Ed25519 public key used to check checkpoints and export manifests."""

    def __init__(self, public_key: Ed25519PublicKey) -> None:
        self._key = public_key
        self.raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.key_id = key_fingerprint(self.raw)

    @classmethod
    def from_pem(cls, pem: bytes) -> VerifyKey:
        return cls(_ed25519(serialization.load_pem_public_key(pem), Ed25519PublicKey, "public key"))

    @classmethod
    def from_raw_b64(cls, text: str) -> VerifyKey:
        return cls(Ed25519PublicKey.from_public_bytes(_b64_32_bytes(text, "public key")))

    def raw_b64(self) -> str:
        return base64.b64encode(self.raw).decode("ascii")

    def to_pem(self) -> bytes:
        return self._key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def verify(self, data: bytes, signature_b64: str) -> bool:
        """True only for a well-formed signature by this key over exactly `data`."""
        try:
            self._key.verify(base64.b64decode(signature_b64, validate=True), data)
        except (InvalidSignature, binascii.Error, ValueError, TypeError):
            return False
        return True


class SigningKey:
    """The portal's Ed25519 private key; only its public half ever leaves the process."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.verify_key = VerifyKey(private_key.public_key())
        self.key_id = self.verify_key.key_id

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, pem: bytes) -> SigningKey:
        return cls(_ed25519(serialization.load_pem_private_key(pem, password=None), Ed25519PrivateKey, "signing key"))

    @classmethod
    def from_raw_b64(cls, text: str) -> SigningKey:
        return cls(Ed25519PrivateKey.from_private_bytes(_b64_32_bytes(text, "signing key")))

    def sign(self, data: bytes) -> str:
        return base64.b64encode(self._key.sign(data)).decode("ascii")

    def private_pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def public_pem(self) -> bytes:
        return self.verify_key.to_pem()

    def public_raw_b64(self) -> str:
        return self.verify_key.raw_b64()

    def private_raw_b64(self) -> str:
        """The raw 32-byte Ed25519 seed in base64, the form `from_raw_b64` reads back."""
        raw = self._key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        return base64.b64encode(raw).decode("ascii")

    def __repr__(self) -> str:
        return f"SigningKey(key_id={self.key_id!r})"


def _ed25519(key: Any, kind: type[T], what: str) -> T:
    """`key` as loaded from PEM, refused unless it is an Ed25519 key of the expected kind."""
    if not isinstance(key, kind):
        raise ValueError(f"the {what} is not an Ed25519 key")
    return key


def _b64_32_bytes(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"the {what} is neither PEM nor base64") from None
    if len(raw) != 32:
        raise ValueError(f"the raw {what} must be 32 bytes, got {len(raw)}")
    return raw


def _read_source(source: str) -> bytes:
    """A key source is either a file path or the key itself (PEM text or base64)."""
    source = source.strip()
    if not source:
        raise ValueError("no key given")
    if not source.startswith("-----BEGIN") and os.path.isfile(source):
        with open(source, "rb") as handle:
            return handle.read().strip()
    return source.encode("utf-8")


def load_signing_key(source: str) -> SigningKey:
    """Load from a PEM file path, PEM text, or base64 of the raw 32-byte private key."""
    data = _read_source(source)
    if data.startswith(b"-----BEGIN"):
        return SigningKey.from_pem(data)
    return SigningKey.from_raw_b64(data.decode("ascii", errors="replace"))


def load_verify_key(source: str) -> VerifyKey:
    """Load from a PEM file path, PEM text, or base64 of the raw 32-byte public key."""
    data = _read_source(source)
    if data.startswith(b"-----BEGIN"):
        return VerifyKey.from_pem(data)
    return VerifyKey.from_raw_b64(data.decode("ascii", errors="replace"))


def generate_signing_key_pem() -> bytes:
    """A fresh PKCS#8 PEM private key for PORTAL_AUDIT_SIGNING_KEY or `--signing-key`."""
    return SigningKey.generate().private_pem()


@dataclass(frozen=True)
class Entry:
    """One audit entry: its sequence number and its event, leaf seq - 1 of the Merkle tree (audit/merkle.py)."""

    seq: int
    event: AuditEvent

    def leaf_data(self, seq: int | None = None) -> bytes:
        """What this entry is in the Merkle tree: canonical JSON of {seq, event} (with another seq: what it
        would be there, which tells a moved entry from an edited one)."""
        return leaf_data(self.seq if seq is None else seq, self.event.to_dict())

    def leaf_hash(self, seq: int | None = None) -> bytes:
        return merkle_leaf_hash(self.leaf_data(seq))

    def to_record(self) -> dict[str, Any]:
        """The JSONL form, shared by the file store and JSONL exports: the leaf data, plus its leaf hash
        (base64), which lets a verifier point at an edited line; the signed tree checkpoints are what bind."""
        return {"type": "entry", "seq": self.seq, "event": self.event.to_dict(),
                "leaf_hash": base64.b64encode(self.leaf_hash()).decode("ascii")}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Entry:
        seq = record["seq"]
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise ValueError("seq must be an integer")
        return cls(seq, AuditEvent.from_dict(record["event"]))


def leaf_data(seq: int, event: dict[str, Any]) -> bytes:
    """Canonical JSON of {seq, event}, `event` being AuditEvent.to_dict() output: the bytes a leaf hashes."""
    return canonical_json({"seq": seq, "event": event})

