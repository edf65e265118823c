"""Signed notes, checkpoints and witness cosignatures in the C2SP text formats.

- c2sp.org/signed-note: a UTF-8 text ending in a newline, a blank line, then one line per
  signature, `— <key name> base64(4-byte key id ‖ signature)`. Ed25519 keys (type 0x01) have the
  key id SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)[:4] and the verifier key `name+<8 hex>+base64(0x01 ‖ key)`.
- c2sp.org/tlog-checkpoint: the note text is the origin line, the tree size in decimal, the
  base64 RFC 9162 root hash, then optional non-empty extension lines.
- c2sp.org/tlog-cosignature: a witness signs (type 0x04) "cosignature/v1\\ntime <t>\\n" + checkpoint
  text, and the signature bytes are the 8-byte big-endian time followed by the Ed25519 signature.

Parsing is strict and every refusal is a `NoteError` saying what is wrong. Following the spec,
signatures by keys the caller did not name are ignored, and a signature by a named key that fails
to verify rejects the whole note. Ed25519 itself is `cryptography`'s, through audit.entries' keys.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit.entries import SigningKey, VerifyKey

ALG_ED25519 = 0x01
ALG_COSIGNATURE_V1 = 0x04
ALGORITHMS = {ALG_ED25519: "Ed25519", ALG_COSIGNATURE_V1: "Ed25519 cosignature/v1"}
SIGNATURE_PREFIX = "— "
MAX_SIGNATURES = 100
MAX_TIMESTAMP = 2**63 - 1
MAX_TREE_SIZE = 2**64 - 1
HASH_SIZE = 32
ED25519_SIGNATURE_SIZE = 64
COSIGNATURE_HEADER = "cosignature/v1\n"
_HEX8 = re.compile(r"[0-9a-f]{8}")
_DECIMAL = re.compile(r"0|[1-9][0-9]*")


class NoteError(ValueError):
    """A note, checkpoint, key or signature that is malformed, forged, or not signed as required."""


def key_name_ok(name: str) -> bool:
    """Key names are non-empty and hold neither Unicode spaces nor '+'."""
    return bool(name) and "+" not in name and not any(ch.isspace() for ch in name)


def key_id(name: str, algorithm: int, public_key: bytes) -> int:
    """SHA-256(name ‖ 0x0A ‖ algorithm ‖ public key), first 4 bytes as a big-endian uint32."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([algorithm]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


def b64decode_strict(text: str, what: str) -> bytes:
    """Standard base64 in its one canonical spelling (padding and unused bits included)."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise NoteError(f"{what} is not base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise NoteError(f"{what} is not canonical base64")
    return raw


def b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _name_and_id(name: str, ident: int) -> str:
    return f"{name}+{ident:08x}"


@dataclass(frozen=True)
class Signature:
    """One signature line: the key name, the key id and the signature bytes after the id."""

    name: str
    key_id: int
    signature: bytes

    def line(self) -> str:
        return f"{SIGNATURE_PREFIX}{self.name} {b64encode(struct.pack('>I', self.key_id) + self.signature)}\n"

    def key(self) -> str:
        return _name_and_id(self.name, self.key_id)

    @classmethod
    def parse_line(cls, line: str, number: int = 1) -> Signature:
        """One line without its newline; `number` only names the line in errors."""
        if not line.startswith(SIGNATURE_PREFIX):
            raise NoteError(f"signature line {number} does not start with an em dash and a space")
        name, space, encoded = line[len(SIGNATURE_PREFIX):].partition(" ")
        if not space or not key_name_ok(name):
            raise NoteError(f"signature line {number} has no valid key name")
        raw = b64decode_strict(encoded, f"signature line {number}")
        if len(raw) < 5:
            raise NoteError(f"signature line {number} is too short to hold a key id and a signature")
        return cls(name, struct.unpack(">I", raw[:4])[0], raw[4:])


class Verifier:
    """A public key that checks note signatures: Ed25519 (0x01) or an Ed25519 cosignature/v1 (0x04)."""

    def __init__(self, name: str, algorithm: int, public_key: bytes) -> None:
        if not key_name_ok(name):
            raise NoteError(f"invalid key name {name!r}: it must be non-empty, without spaces or '+'")
        if algorithm not in ALGORITHMS:
            raise NoteError(f"unsupported signature type 0x{algorithm:02x}")
        if len(public_key) != 32:
            raise NoteError(f"an Ed25519 public key is 32 bytes, got {len(public_key)}")
        self.name = name
        self.algorithm = algorithm
        self.public_key = public_key
        self.key_id = key_id(name, algorithm, public_key)
        self._key = VerifyKey(Ed25519PublicKey.from_public_bytes(public_key))

    @classmethod
    def from_vkey(cls, vkey: str) -> Verifier:
        """Parse `name+<8 lowercase hex key id>+base64(type ‖ public key)`; the id must match the key."""
        name, plus, rest = vkey.partition("+")
        ident, plus2, encoded = rest.partition("+")
        if not plus or not plus2 or not key_name_ok(name):
            raise NoteError("a verifier key is name+keyid+base64key, with a name free of spaces and '+'")
        if not _HEX8.fullmatch(ident):
            raise NoteError("the key id of a verifier key is 8 lowercase hex digits")
        raw = b64decode_strict(encoded, "the verifier key's public key")
        if not raw:
            raise NoteError("the verifier key has no key material")
        verifier = cls(name, raw[0], raw[1:])
        if f"{verifier.key_id:08x}" != ident:
            raise NoteError(f"verifier key id {ident} does not match its name and public key")
        return verifier

    def vkey(self) -> str:
        return f"{self.key()}+{b64encode(bytes([self.algorithm]) + self.public_key)}"

    def key(self) -> str:
        return _name_and_id(self.name, self.key_id)

    def matches(self, signature: Signature) -> bool:
        return signature.name == self.name and signature.key_id == self.key_id

    def verify(self, text: str, signature: Signature) -> bool:
        """True only for this key's valid signature over exactly `text` (the note text)."""
        if not self.matches(signature):
            return False
        message, raw = text.encode("utf-8"), signature.signature
        if self.algorithm == ALG_COSIGNATURE_V1:
            if len(raw) != 8 + ED25519_SIGNATURE_SIZE:
                return False
            timestamp = struct.unpack(">Q", raw[:8])[0]
            if timestamp > MAX_TIMESTAMP:
                return False
            message, raw = cosignature_message(text, timestamp), raw[8:]
        return len(raw) == ED25519_SIGNATURE_SIZE and self._key.verify(message, b64encode(raw))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Verifier) and other.vkey() == self.vkey()

    def __hash__(self) -> int:
        return hash(self.vkey())

    def __repr__(self) -> str:
        return f"Verifier({self.vkey()!r})"


def cosignature_message(text: str, timestamp: int) -> bytes:
    """What a cosigner/v1 signs: header line, time line, then the whole checkpoint text."""
    return f"{COSIGNATURE_HEADER}time {timestamp}\n{text}".encode()


def cosignature_timestamp(signature: Signature) -> int:
    """The POSIX time a cosignature/v1 carries (its first 8 bytes, big-endian)."""
    if len(signature.signature) != 8 + ED25519_SIGNATURE_SIZE:
        raise NoteError(f"signature by {signature.key()} is not an Ed25519 cosignature/v1")
    return struct.unpack(">Q", signature.signature[:8])[0]


class NoteSigner:
    """Signs note text with audit.entries' Ed25519 key, as `name` (type 0x01, or 0x04 for a cosigner)."""

    def __init__(self, name: str, key: SigningKey, algorithm: int = ALG_ED25519) -> None:
        self.verifier = Verifier(name, algorithm, key.verify_key.raw)
        self.name = name
        self.algorithm = algorithm
        self.key_id = self.verifier.key_id
        self._key = key

    def vkey(self) -> str:
        return self.verifier.vkey()

    def sign(self, text: str, timestamp: int | None = None) -> Signature:
        """The signature line for `text`; a cosigner needs the non-zero POSIX `timestamp` it vouches for."""
        _check_text(text)
        if self.algorithm == ALG_COSIGNATURE_V1:
            if timestamp is None or not 0 < timestamp <= MAX_TIMESTAMP:
                raise NoteError("a cosignature needs a positive POSIX timestamp below 2^63")
            raw = base64.b64decode(self._key.sign(cosignature_message(text, timestamp)))
            return Signature(self.name, self.key_id, struct.pack(">Q", timestamp) + raw)
        if timestamp is not None:
            raise NoteError("plain Ed25519 note signatures carry no timestamp")
        return Signature(self.name, self.key_id, base64.b64decode(self._key.sign(text.encode("utf-8"))))

    def signer_key(self) -> str:
        """The private key in golang.org/x/mod/sumdb/note's form: PRIVATE+KEY+name+id+base64(type ‖ seed)."""
        seed = base64.b64decode(self._key.private_raw_b64())
        return f"PRIVATE+KEY+{self.verifier.key()}+{b64encode(bytes([self.algorithm]) + seed)}"

    @classmethod
    def from_signer_key(cls, text: str) -> NoteSigner:
        parts = text.strip().split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise NoteError("a signer key is PRIVATE+KEY+name+keyid+base64(type ‖ seed)")
        _, _, name, ident, encoded = parts
        raw = b64decode_strict(encoded, "the signer key")
        if len(raw) != 33:
            raise NoteError("a signer key holds a type byte and a 32-byte Ed25519 seed")
        signer = cls(name, SigningKey.from_raw_b64(b64encode(raw[1:])), raw[0])
        if f"{signer.key_id:08x}" != ident:
            raise NoteError(f"signer key id {ident} does not match its name and key")
        return signer


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise NoteError("note text must end with a newline")
    _check_characters(text)


def _check_characters(text: str) -> None:
    for position, ch in enumerate(text):
        if ch < " " and ch != "\n":
            raise NoteError(f"note holds control character 0x{ord(ch):02x} at character {position}")


@dataclass(frozen=True)
class Note:
    """A note's text and its signature lines, parsed but not yet verified."""

    text: str
    signatures: tuple[Signature, ...]

    def encode(self) -> str:
        return self.text + "\n" + "".join(signature.line() for signature in self.signatures)

    def with_signatures(self, signatures: Iterable[Signature]) -> Note:
        """The same text with more signatures; a repeated (name, key id) keeps its first line."""
        merged = list(self.signatures)
        for signature in signatures:
            if not any(s.name == signature.name and s.key_id == signature.key_id for s in merged):
                merged.append(signature)
        return Note(self.text, tuple(merged))

    @classmethod
    def parse(cls, data: bytes | str) -> Note:
        """Split and syntax-check a signed note; no signature is checked here."""
        if isinstance(data, bytes):
            try:
                data = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise NoteError(f"note is not UTF-8 (byte {exc.start})") from None
        _check_characters(data)
        split = data.rfind("\n\n")
        if split < 0:
            raise NoteError("note has no blank line before its signatures")
        text, block = data[: split + 1], data[split + 2:]
        if not block:
            raise NoteError("note has no signature lines")
        if not block.endswith("\n"):
            raise NoteError("note's last signature line does not end with a newline (truncated?)")
        lines = block[:-1].split("\n")
        if len(lines) > MAX_SIGNATURES:
            raise NoteError(f"note has more than {MAX_SIGNATURES} signatures")
        return cls(text, tuple(Signature.parse_line(line, number) for number, line in enumerate(lines, 1)))

    def verify(self, verifiers: Sequence[Verifier], require_all: bool = True) -> tuple[Signature, ...]:
        """The signatures made by `verifiers`, each checked; signatures by other keys are ignored.

        A signature by one of `verifiers` that does not verify rejects the note. With
        `require_all` every verifier must have signed; otherwise at least one of them.
        """
        _unambiguous(verifiers)
        verified: list[Signature] = []
        for signature in self.signatures:
            verifier = next((v for v in verifiers if v.matches(signature)), None)
            if verifier is None or any(verifier.matches(s) for s in verified):
                continue
            if not verifier.verify(self.text, signature):
                raise NoteError(f"invalid signature for key {signature.key()}")
            verified.append(signature)
        signers = {signature.key() for signature in verified}
        missing = [v.key() for v in verifiers if v.key() not in signers]
        if not verified:
            raise NoteError("note has no signature by a trusted key (expected " + ", ".join(missing) + ")")
        if require_all and missing:
            raise NoteError("note is not signed by " + ", ".join(missing))
        return tuple(verified)


def _unambiguous(verifiers: Sequence[Verifier]) -> None:
    if not verifiers:
        raise NoteError("no verifier key given")
    seen: dict[str, Verifier] = {}
    for verifier in verifiers:
        if seen.setdefault(verifier.key(), verifier) != verifier:
            raise NoteError(f"ambiguous key {verifier.key()}: two different keys share its name and id")


def sign_note(text: str, *signers: NoteSigner) -> str:
    """The signed note: `text`, a blank line, and one plain Ed25519 signature line per signer."""
    if not signers:
        raise NoteError("a note needs at least one signer")
    return Note(text, tuple(signer.sign(text) for signer in signers)).encode()


def open_note(data: bytes | str, verifiers: Sequence[Verifier], require_all: bool = True) -> Note:
    """Parse and verify a note; the returned Note keeps only the signatures that verified."""
    note = Note.parse(data)
    return Note(note.text, note.verify(verifiers, require_all))


@dataclass(frozen=True)
class Checkpoint:
    """A tlog-checkpoint body: which log (origin), how many leaves, and the RFC 9162 root hash."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin:
            raise NoteError("checkpoint origin must be one non-empty line")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or not 0 <= self.size <= MAX_TREE_SIZE:
            raise NoteError("checkpoint tree size must be a whole number from 0 to 2^64-1")
        if len(self.root_hash) != HASH_SIZE:
            raise NoteError(f"checkpoint root hash must be {HASH_SIZE} bytes, got {len(self.root_hash)}")
        if any(not line or "\n" in line for line in self.extensions):
            raise NoteError("checkpoint extension lines must be single non-empty lines")

    def text(self) -> str:
        lines = [self.origin, str(self.size), b64encode(self.root_hash), *self.extensions]
        return "".join(line + "\n" for line in lines)

    def sign(self, signer: NoteSigner) -> str:
        """The signed checkpoint note (the log's key name should be its origin)."""
        return sign_note(self.text(), signer)

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Parse note text (with its final newline) as a checkpoint, refusing anything loose."""
        if not text.endswith("\n"):
            raise NoteError("checkpoint text must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise NoteError("checkpoint needs an origin, a tree size and a root hash line")
        origin, size, root, *extensions = lines
        if not origin:
            raise NoteError("checkpoint origin line is empty")
        if not _DECIMAL.fullmatch(size):
            raise NoteError(f"checkpoint tree size {size[:40]!r} is not a decimal without leading zeros")
        if int(size) > MAX_TREE_SIZE:
            raise NoteError("checkpoint tree size does not fit in 64 bits")
        if any(not line for line in extensions):
            raise NoteError("checkpoint has an empty extension line")
        return cls(origin, int(size), b64decode_strict(root, "checkpoint root hash"), tuple(extensions))


def open_checkpoint(
    data: bytes | str, verifiers: Sequence[Verifier], origin: str | None = None, require_all: bool = True
) -> tuple[Checkpoint, Note]:
    """Verify a signed checkpoint (optionally from a given origin): its body and its verified signatures."""
    note = open_note(data, verifiers, require_all)
    checkpoint = Checkpoint.parse(note.text)
    if origin is not None and checkpoint.origin != origin:
        raise NoteError(f"checkpoint origin {checkpoint.origin!r} is not the expected {origin!r}")
    return checkpoint, note
