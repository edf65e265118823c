"""Exceptions with a contract (callers branch on these, so they stay few and specific), and the
problem a verifier reports instead of raising."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """The first thing a verifier found wrong: where (a seq, or a line number in a file), what kind, and why."""

    position: int
    kind: str
    message: str


class AuditWriteError(RuntimeError):
    """An event could not be durably recorded. Callers must fail closed (e.g. answer 503)."""


class MalformedEntryError(ValueError):
    """A stored entry or line cannot be parsed; `position` is its seq or line number."""

    def __init__(self, position: int, message: str) -> None:
        super().__init__(f"position {position}: {message}")
        self.position = position
        self.message = message


class CannotVerify(ValueError):
    """A file the verifier cannot check at all (unknown format, no manifest): neither intact nor tampered."""


class TreeError(RuntimeError):
    """The stored Merkle tree lacks a hash it must have, or does not match the entries: evidence of damage."""
