"""The hash chain and its signed checkpoints (and each entry's Merkle leaf, see audit/merkle.py).

Each entry hashes its own sequence number, its predecessor's hash and its event, so editing,
removing, inserting or reordering entries breaks the chain. A chain alone cannot reveal a
truncated tail, so checkpoints sign (count, head hash) with an Ed25519 key held by the
portal: a checkpoint proves that the log once had at least `count` entries ending in
`head_hash`.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from audit.events import AuditEvent, format_time, parse_time, utcnow
from audit.merkle import leaf_hash as merkle_leaf_hash

GENESIS_HASH = "0" * 64


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


def compute_entry_hash(seq: int, prev_hash: str, event: dict[str, Any]) -> str:
    """SHA-256 over canonical {seq, prev_hash, event}; `event` is AuditEvent.to_dict() output."""
    return sha256_hex(canonical_json({"seq": seq, "prev_hash": prev_hash, "event": event}))


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
        key = serialization.load_pem_public_key(pem)
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("the public key is not an Ed25519 key")
        return cls(key)

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
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("the signing key is not an Ed25519 private key")
        return cls(key)

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
    """One link of the chain: the event plus the hashes that tie it to its predecessor."""

    seq: int
    event: AuditEvent
    prev_hash: str
    entry_hash: str

    @classmethod
    def create(cls, seq: int, prev_hash: str, event: AuditEvent) -> Entry:
        return cls(seq, event, prev_hash, compute_entry_hash(seq, prev_hash, event.to_dict()))

    def recompute_hash(self, seq: int | None = None) -> str:
        return compute_entry_hash(self.seq if seq is None else seq, self.prev_hash, self.event.to_dict())

    def hash_ok(self) -> bool:
        return self.recompute_hash() == self.entry_hash

    def leaf_data(self) -> bytes:
        """What this entry is in the Merkle tree (audit/merkle.py), at leaf index seq - 1.

        Canonical JSON of {seq, event}: the chain fields prev_hash and entry_hash are left out,
        so the tree does not depend on the chain, which it is meant to replace.
        """
        return canonical_json({"seq": self.seq, "event": self.event.to_dict()})

    def leaf_hash(self) -> bytes:
        return merkle_leaf_hash(self.leaf_data())

    def to_record(self) -> dict[str, Any]:
        """The JSONL form, shared by the file store and JSONL exports."""
        return {
            "type": "entry",
            "seq": self.seq,
            "prev_hash": self.prev_hash,
            "entry_hash": self.entry_hash,
            "event": self.event.to_dict(),
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Entry:
        seq = record["seq"]
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise ValueError("seq must be an integer")
        prev_hash, entry_hash = record["prev_hash"], record["entry_hash"]
        if not isinstance(prev_hash, str) or not isinstance(entry_hash, str):
            raise ValueError("hashes must be strings")
        return cls(seq, AuditEvent.from_dict(record["event"]), prev_hash, entry_hash)


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement that the log had `count` entries ending in `head_hash` at `created`.

    `public_key` (raw base64) travels with the checkpoint so a verifier without the portal's
    key can still check it, but such a check is only self-asserted: the key is not signed.
    """

    count: int
    head_hash: str
    created: datetime
    key_id: str
    signature: str
    public_key: str | None = None

    @staticmethod
    def payload(count: int, head_hash: str, created: datetime, key_id: str) -> bytes:
        return canonical_json(
            {"count": count, "head_hash": head_hash, "created": format_time(created), "key_id": key_id}
        )

    @classmethod
    def sign(cls, count: int, head_hash: str, key: SigningKey, created: datetime | None = None) -> Checkpoint:
        created = created or utcnow()
        signature = key.sign(cls.payload(count, head_hash, created, key.key_id))
        return cls(count, head_hash, created, key.key_id, signature, key.public_raw_b64())

    def signature_ok(self, key: VerifyKey) -> bool:
        if self.key_id != key.key_id:
            return False
        return key.verify(self.payload(self.count, self.head_hash, self.created, self.key_id), self.signature)

    def to_record(self) -> dict[str, Any]:
        return {
            "type": "checkpoint",
            "count": self.count,
            "head_hash": self.head_hash,
            "created": format_time(self.created),
            "key_id": self.key_id,
            "signature": self.signature,
            "public_key": self.public_key,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Checkpoint:
        count = record["count"]
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise ValueError("checkpoint count must be a non-negative integer")
        return cls(
            count,
            str(record["head_hash"]),
            parse_time(record["created"]),
            str(record["key_id"]),
            str(record["signature"]),
            record.get("public_key"),
        )
