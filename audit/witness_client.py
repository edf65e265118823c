"""Submitting a checkpoint to a C2SP tlog-witness and checking the cosignature it answers with.

`add_checkpoint` posts `old <size>`, the consistency proof, a blank line and the signed
checkpoint to `<url>/add-checkpoint`, and returns the witness's verified cosignature. What can go
wrong is told apart, because the caller reacts differently:
- `WitnessUnreachable`: no answer (refused connection, timeout, a 5xx): keep appending, retry later.
- `WitnessConflict`: the witness last cosigned another size (`latest_size`): resubmit from there,
  or, if that size is larger than the log, the log has lost its tail.
- `WitnessRefused`: the witness answered 4xx (forged, inconsistent or malformed checkpoint).
- `WitnessAnswerError`: a 200 whose body is not a valid cosignature by the expected witness key.
"""
from __future__ import annotations

import base64
import http.client
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

from audit.note import Checkpoint, Note, NoteError, Signature, Verifier, cosignature_timestamp
from audit.witness import MAX_BODY_BYTES, MAX_PROOF_LINES, SIZE_CONTENT_TYPE

DEFAULT_TIMEOUT_SECONDS = 10.0


class WitnessError(Exception):
    """Any failure to get a valid cosignature."""


class WitnessUnreachable(WitnessError):
    """The witness did not answer (network error, timeout or server error): retry later."""


class WitnessRefused(WitnessError):
    """The witness refused the checkpoint; `status` is its HTTP status, the message its reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"witness refused the checkpoint ({status}): {reason}")
        self.status = status
        self.reason = reason


class WitnessConflict(WitnessRefused):
    """409: the witness's latest cosigned size is `latest_size`, not the old size sent."""

    def __init__(self, latest_size: int) -> None:
        super().__init__(409, f"its latest cosigned size is {latest_size}")
        self.latest_size = latest_size


class WitnessAnswerError(WitnessError):
    """A 200 answer that does not hold a valid cosignature by the expected witness key."""


@dataclass(frozen=True)
class Cosigned:
    """A checkpoint the witness cosigned: its verified signature line, time, and the merged note."""

    checkpoint: Checkpoint
    cosignature: Signature
    timestamp: int
    note: str


def request_body(signed_checkpoint: str, old_size: int, proof: Sequence[bytes]) -> bytes:
    """The add-checkpoint body: `old <size>`, one base64 proof hash per line, a blank line, the checkpoint."""
    if old_size < 0:
        raise ValueError("the old size cannot be negative")
    if len(proof) > MAX_PROOF_LINES:
        raise ValueError(f"a consistency proof has at most {MAX_PROOF_LINES} hashes")
    lines = [f"old {old_size}", *(base64.b64encode(digest).decode("ascii") for digest in proof)]
    return ("\n".join(lines) + "\n\n" + signed_checkpoint).encode("utf-8")


def add_checkpoint(url: str, signed_checkpoint: str, old_size: int, proof: Sequence[bytes], witness: Verifier,
                   timeout: float = DEFAULT_TIMEOUT_SECONDS) -> Cosigned:
    """Submit a checkpoint with a consistency proof from `old_size`; return the verified cosignature."""
    note = Note.parse(signed_checkpoint)
    checkpoint = Checkpoint.parse(note.text)
    endpoint = _endpoint(url)
    request = urllib.request.Request(  # noqa: S310 - _endpoint allows only http(s)
        endpoint, data=request_body(signed_checkpoint, old_size, proof), method="POST",
        headers={"Content-Type": "text/plain; charset=utf-8"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - scheme checked above
            body = response.read(MAX_BODY_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise _refusal(exc) from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        raise WitnessUnreachable(f"witness {endpoint} did not answer: {exc}") from None
    return _cosigned(note, checkpoint, body, witness)


def _endpoint(url: str) -> str:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"the witness URL {url!r} is not an http(s) URL")
    return url.rstrip("/") + "/add-checkpoint"


def _refusal(error: urllib.error.HTTPError) -> WitnessError:
    try:
        text = error.read(MAX_BODY_BYTES).decode("utf-8", errors="replace").strip()
    except (OSError, http.client.HTTPException):
        text = ""
    finally:
        error.close()
    if error.code >= 500:
        return WitnessUnreachable(f"witness failed ({error.code}): {text or error.reason}")
    if error.code == 409:
        content_type = (error.headers.get("Content-Type") or "").split(";")[0].strip()
        if content_type == SIZE_CONTENT_TYPE and text.isdigit():
            return WitnessConflict(int(text))
        return WitnessAnswerError(f"a 409 from the witness without its latest size: {text[:200]!r}")
    return WitnessRefused(error.code, text[:500] or str(error.reason))


def _cosigned(note: Note, checkpoint: Checkpoint, body: bytes, witness: Verifier) -> Cosigned:
    if len(body) > MAX_BODY_BYTES:
        raise WitnessAnswerError("the witness answer is too large")
    try:
        text = body.decode("utf-8")
        if not text.endswith("\n"):
            raise NoteError("the witness answer does not end with a newline")
        lines = [Signature.parse_line(line, number) for number, line in enumerate(text[:-1].split("\n"), 1)]
        verified = Note(note.text, tuple(lines)).verify([witness])
        cosignature = verified[0]
        timestamp = cosignature_timestamp(cosignature)
        if timestamp == 0:
            raise NoteError("a witness cosignature must carry a non-zero time")
    except (UnicodeDecodeError, NoteError) as exc:
        raise WitnessAnswerError(f"the witness answer is not a valid cosignature by {witness.key()}: {exc}") from None
    return Cosigned(checkpoint, cosignature, timestamp, note.with_signatures([cosignature]).encode())
