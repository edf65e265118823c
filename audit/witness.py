"""A witness for the audit log: C2SP tlog-witness `add-checkpoint`, as a small separate HTTP program.

The witness holds its own Ed25519 cosigner key (cosignature/v1, type 0x04), trusts a fixed list
of log verifier keys (a log's origin is its key's name), and remembers, per origin, the latest
checkpoint it cosigned in its own state file, never in the portal's database. It cosigns a
checkpoint only if it is signed by a trusted key of its origin and is consistent with, and not
smaller than, the one it cosigned before, so a log that truncates its tail, rolls back or forks
is caught by the next submission.

`POST /add-checkpoint` body: `old <size>` line, the consistency proof from that size (one base64
hash per line), a blank line, then the signed checkpoint. Answers (c2sp.org/tlog-witness):
200 with the cosignature line; 400 malformed request (or old size above the checkpoint's);
403 no valid signature by a trusted key of the origin; 404 unknown origin; 409 `old` is not the
size last cosigned (body: that size, `text/x.tlog.size`); 422 a proof that does not verify, a
non-empty proof from size 0, the same size with another root, or a size-0 checkpoint whose root
is not the empty tree's. `GET /<sha256 hex of origin>/checkpoint` serves the latest cosigned
checkpoint. Errors other than 409 carry a one-line plain-text reason.

Check-then-persist happens under one lock, and the state is written atomically (temporary
file, fsync, rename, fsync of the directory) before the cosignature is returned.
"""
from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import logging
import os
import re
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import IO, Any

from audit.entries import SigningKey
from audit.merkle import EMPTY_ROOT, ProofError, verify_consistency
from audit.note import (
    ALG_COSIGNATURE_V1,
    HASH_SIZE,
    Checkpoint,
    Note,
    NoteError,
    NoteSigner,
    Verifier,
    b64decode_strict,
)

MAX_PROOF_LINES = 63
MAX_BODY_BYTES = 64 * 1024
SIZE_CONTENT_TYPE = "text/x.tlog.size"
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"
STATE_VERSION = 1
_OLD_LINE = re.compile(r"old (0|[1-9][0-9]*)")
_ORIGIN_PATH = re.compile(r"/([0-9a-f]{64})/checkpoint")
log = logging.getLogger("audit.witness")


class WitnessStateError(RuntimeError):
    """The witness's state file cannot be read, written or locked; the witness must not cosign."""


@dataclass(frozen=True)
class Reply:
    """An HTTP answer, independent of the server that sends it."""

    status: int
    body: str
    content_type: str = TEXT_CONTENT_TYPE


@dataclass(frozen=True)
class LogState:
    """The latest checkpoint the witness cosigned for one origin, with its signatures."""

    size: int
    root_hash: bytes
    note: str

    def to_record(self) -> dict[str, Any]:
        return {"size": self.size, "root_hash": base64.b64encode(self.root_hash).decode("ascii"), "note": self.note}

    @classmethod
    def from_record(cls, origin: str, record: Any) -> LogState:
        try:
            size, root, note = record["size"], record["root_hash"], record["note"]
            checkpoint = Checkpoint.parse(Note.parse(note).text)
        except (KeyError, TypeError, NoteError) as exc:
            raise WitnessStateError(f"state for origin {origin!r} is malformed: {exc}") from None
        if (checkpoint.origin, checkpoint.size, base64.b64encode(checkpoint.root_hash).decode()) != (origin, size, root):
            raise WitnessStateError(f"state for origin {origin!r} disagrees with its stored checkpoint")
        return cls(size, checkpoint.root_hash, note)


class StateFile:
    """The witness's own JSON file: one LogState per origin, replaced atomically on each cosignature.

    An exclusive lock on `<path>.lock`, held while the witness runs, keeps a second witness
    process from sharing (and rolling back) the same state.
    """

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self._lock_handle: IO[bytes] | None = None

    def lock(self) -> None:
        handle = open(f"{self.path}.lock", "ab")  # noqa: SIM115 - held open for the process's lifetime
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise WitnessStateError(f"another witness is using the state file {self.path}") from None
        self._lock_handle = handle

    def unlock(self) -> None:
        if self._lock_handle is not None:
            self._lock_handle.close()
            self._lock_handle = None

    def load(self) -> dict[str, LogState]:
        try:
            with open(self.path, encoding="utf-8") as handle:
                document = json.load(handle)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise WitnessStateError(f"cannot read the witness state {self.path}: {exc}") from None
        if not isinstance(document, dict) or document.get("version") != STATE_VERSION or not isinstance(
                document.get("logs"), dict):
            raise WitnessStateError(f"{self.path} is not a version {STATE_VERSION} witness state file")
        return {origin: LogState.from_record(origin, record) for origin, record in document["logs"].items()}

    def save(self, logs: dict[str, LogState]) -> None:
        document = {"version": STATE_VERSION, "logs": {origin: state.to_record() for origin, state in logs.items()}}
        directory = os.path.dirname(self.path)
        temporary = None
        try:
            descriptor, temporary = tempfile.mkstemp(prefix=".witness-state-", dir=directory)
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                json.dump(document, handle, indent=1, sort_keys=True)
                handle.write("\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
            directory_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(directory_fd)
            finally:
                os.close(directory_fd)
        except OSError as exc:
            if temporary and os.path.exists(temporary):
                os.unlink(temporary)
            raise WitnessStateError(f"cannot write the witness state {self.path}: {exc}") from None


class RequestError(Exception):
    """An add-checkpoint request refused before any state is read; carries its HTTP reply."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.reply = Reply(status, message + "\n")


@dataclass(frozen=True)
class AddCheckpoint:
    """A parsed add-checkpoint body."""

    old_size: int
    proof: tuple[bytes, ...]
    note: Note
    checkpoint: Checkpoint

    @classmethod
    def parse(cls, body: bytes) -> AddCheckpoint:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError(400, "the request body is not UTF-8") from None
        head, blank, signed = text.partition("\n\n")
        if not blank:
            raise RequestError(400, "the request has no blank line between the proof and the checkpoint")
        lines = head.split("\n")
        match = _OLD_LINE.fullmatch(lines[0])
        if not match:
            raise RequestError(400, "the first line must be `old <size>` in decimal without leading zeros")
        if len(lines) - 1 > MAX_PROOF_LINES:
            raise RequestError(400, f"the consistency proof has more than {MAX_PROOF_LINES} lines")
        try:
            proof = tuple(_proof_hash(line, number) for number, line in enumerate(lines[1:], 1))
            note = Note.parse(signed)
            checkpoint = Checkpoint.parse(note.text)
        except NoteError as exc:
            raise RequestError(400, str(exc)) from None
        old_size = int(match.group(1))
        if old_size > checkpoint.size:
            raise RequestError(400, f"old size {old_size} is larger than the checkpoint size {checkpoint.size}")
        return cls(old_size, proof, note, checkpoint)


def _proof_hash(line: str, number: int) -> bytes:
    digest = b64decode_strict(line, f"consistency proof line {number}")
    if len(digest) != HASH_SIZE:
        raise NoteError(f"consistency proof line {number} is {len(digest)} bytes, not {HASH_SIZE}")
    return digest


def origin_hash(origin: str) -> str:
    """The monitoring path's name for a log: lowercase hex SHA-256 of its origin."""
    return hashlib.sha256(origin.encode("utf-8")).hexdigest()


class Witness:
    """The protocol: checks an add-checkpoint request against the stored state and cosigns it."""

    def __init__(self, signer: NoteSigner, logs: Sequence[Verifier], state: StateFile,
                 clock: Callable[[], float] = time.time) -> None:
        if signer.algorithm != ALG_COSIGNATURE_V1:
            raise ValueError("the witness key must be an Ed25519 cosignature/v1 (type 0x04) key")
        if not logs:
            raise ValueError("the witness needs at least one log verifier key")
        self.signer = signer
        self.origins: dict[str, list[Verifier]] = {}
        for verifier in logs:
            self.origins.setdefault(verifier.name, []).append(verifier)
        self._state = state
        self._clock = clock
        self._lock = threading.Lock()
        self._logs = state.load()

    def latest(self, origin: str) -> LogState | None:
        with self._lock:
            return self._logs.get(origin)

    def add_checkpoint(self, body: bytes) -> Reply:
        try:
            request = AddCheckpoint.parse(body)
            return self._add(request)
        except RequestError as exc:
            return exc.reply

    def _add(self, request: AddCheckpoint) -> Reply:
        checkpoint = request.checkpoint
        trusted = self.origins.get(checkpoint.origin)
        if trusted is None:
            raise RequestError(404, f"unknown log origin {checkpoint.origin!r}")
        try:
            request.note.verify(trusted, require_all=False)
        except NoteError as exc:
            raise RequestError(403, str(exc)) from None
        with self._lock:
            previous = self._logs.get(checkpoint.origin)
            latest_size = previous.size if previous else 0
            if request.old_size != latest_size:
                return Reply(409, f"{latest_size}\n", SIZE_CONTENT_TYPE)
            self._check_consistency(request, previous)
            timestamp = int(self._clock())
            cosignature = self.signer.sign(checkpoint.text(), timestamp)
            state = LogState(checkpoint.size, checkpoint.root_hash, request.note.with_signatures([cosignature]).encode())
            try:
                self._state.save({**self._logs, checkpoint.origin: state})
            except WitnessStateError as exc:
                log.error("%s", exc)
                raise RequestError(503, "the witness cannot persist its state") from None
            self._logs[checkpoint.origin] = state
        return Reply(200, cosignature.line())

    @staticmethod
    def _check_consistency(request: AddCheckpoint, previous: LogState | None) -> None:
        checkpoint, proof = request.checkpoint, request.proof
        if checkpoint.size == 0 and checkpoint.root_hash != EMPTY_ROOT:
            raise _inconsistent(checkpoint, "a checkpoint of size 0 must carry the empty tree's root hash")
        if request.old_size == 0 or previous is None:
            if proof:
                raise _inconsistent(checkpoint, "a consistency proof from size 0 must be empty")
            return
        if checkpoint.size == previous.size:
            if proof or checkpoint.root_hash != previous.root_hash:
                raise _inconsistent(checkpoint, f"a different tree of the same size {checkpoint.size} was cosigned")
            return
        try:
            verify_consistency(previous.size, checkpoint.size, proof, previous.root_hash, checkpoint.root_hash)
        except ProofError as exc:
            raise _inconsistent(checkpoint, str(exc)) from None


def _inconsistent(checkpoint: Checkpoint, reason: str) -> RequestError:
    # A validly signed but inconsistent checkpoint is evidence of log misbehaviour: keep it in the log.
    log.warning("refused checkpoint of %r at size %d: %s", checkpoint.origin, checkpoint.size, reason)
    return RequestError(422, reason)


class WitnessHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 front of a Witness; no Flask, nothing beyond the two protocol paths."""

    protocol_version = "HTTP/1.1"
    server_version = "audit-witness"
    timeout = 30
    witness: Witness

    def do_POST(self) -> None:  # noqa: N802 - the name http.server dispatches to
        length = self.headers.get("Content-Length", "")
        if self.path != "/add-checkpoint":
            refusal = Reply(404, "unknown path: the witness serves POST /add-checkpoint\n")
        elif not length:
            refusal = Reply(411, "the request needs a Content-Length\n")
        elif not length.isdigit():
            refusal = Reply(400, "Content-Length is not a whole number\n")
        elif int(length) > MAX_BODY_BYTES:
            refusal = Reply(413, f"the request body is larger than {MAX_BODY_BYTES} bytes\n")
        else:
            self._send(self.witness.add_checkpoint(self.rfile.read(int(length))))
            return
        self.close_connection = True  # the body was not read, so the connection cannot carry another request
        self._send(refusal)

    def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
        match = _ORIGIN_PATH.fullmatch(self.path)
        origin = next((o for o in self.witness.origins if match and origin_hash(o) == match.group(1)), None)
        state = self.witness.latest(origin) if origin else None
        if state is None:
            self._send(Reply(404, "no checkpoint cosigned for this log\n"))
            return
        self._send(Reply(200, state.note))

    def _send(self, reply: Reply) -> None:
        body = reply.body.encode("utf-8")
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        log.info("%s %s", self.address_string(), format % args)


def make_server(witness: Witness, host: str, port: int) -> ThreadingHTTPServer:
    handler = type("BoundWitnessHandler", (WitnessHandler,), {"witness": witness})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def load_witness_key(path: str) -> NoteSigner:
    """The cosigner key file written by `python -m audit witness-keygen` (PRIVATE+KEY+name+id+base64)."""
    with open(path, encoding="utf-8") as handle:
        signer = NoteSigner.from_signer_key(handle.read())
    if signer.algorithm != ALG_COSIGNATURE_V1:
        raise NoteError(f"{path} is not a cosignature/v1 (type 0x04) witness key")
    return signer


def write_witness_key(name: str, path: str) -> NoteSigner:
    """A fresh cosigner key, created owner-only (never overwriting a file)."""
    signer = NoteSigner(name, SigningKey.generate(), ALG_COSIGNATURE_V1)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(signer.signer_key() + "\n")
    return signer


def run(key_path: str, state_path: str, log_keys: Sequence[str], host: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT; announces `listening on http://host:port` on stdout when ready."""
    signer = load_witness_key(key_path)
    verifiers = [Verifier.from_vkey(vkey) for vkey in log_keys]
    state = StateFile(state_path)
    state.lock()
    try:
        server = make_server(Witness(signer, verifiers, state), host, port)
        signal.signal(signal.SIGTERM, _exit_on_signal)
        bound_host, bound_port = server.server_address[:2]
        print(f"witness {signer.vkey()} listening on http://{bound_host}:{bound_port}", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
    finally:
        state.unlock()


def _exit_on_signal(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
