"""Witnessing the audit log (PORTAL_AUDIT_WITNESS_URL / _KEY): cosignatures off the request path, and
verification against the witness's memory.

Each worker runs `watch_witness` as a green thread (run.py): it submits the newest signed tree
checkpoint the witness has not cosigned, with a consistency proof from the size the witness last
cosigned (the newest stored cosignature, or the size a 409 reported), keeps the cosignature in
audit_tree_cosignature, and backs off while the witness cannot be reached. The log is local, so
requests keep being served and audited meanwhile; the failure counter, the lag gauge, the Integrity
page and, past PORTAL_AUDIT_WITNESS_MAX_LAG_SECONDS, /readyz tell operators.
`flask --app portal audit-witness` runs one round.

`ask_witness` gives verification (portal/compliance/verification.py) the check that catches a lost tail:
the log must still hold the tree the witness last cosigned (audit/witnessed.py, audit/incremental.py).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from flask import Flask, current_app

from audit import Problem, SqlAuditStore, TreeCheckpoint
from audit.note import Checkpoint, Verifier
from audit.witness_client import Cosigned, WitnessConflict, WitnessError, WitnessRefused, add_checkpoint
from audit.witnessed import fetch_witnessed
from portal import services
from portal.extensions import socketio
from portal.observability import WITNESS_FAILURES, WITNESS_LAG

log = logging.getLogger("portal.witness")
SUBMITTER = "portal.witness_submitter"
FIRST_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 60.0
MAX_ROUND_INTERVAL_SECONDS = 5.0

Post = Callable[[str, str, int, Sequence[bytes], Verifier], Cosigned]


class LogBehindWitness(WitnessError):
    """The witness cosigned a larger tree than the log holds: the log lost its tail."""


@dataclass(frozen=True)
class Round:
    """What one submission round did: `cosigned` size, or nothing to do, or the error."""

    cosigned: int | None = None
    error: str | None = None
    truncated: bool = False
    refused: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


class Submitter:
    """Submits the log's tree checkpoints to one witness; `post` and `clock` are replaceable in unit tests."""

    def __init__(self, store: SqlAuditStore, url: str, witness: Verifier, post: Post | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store, self.url, self.witness = store, url, witness
        self.post: Post = post or (lambda *args: add_checkpoint(*args))
        self.clock = clock
        self.witness_size: int | None = None  # what the witness said it last cosigned (a 409's body)
        self.failures = 0  # consecutive failed rounds
        self.last_error: str | None = None
        self.refusal: Round | None = None  # the witness refused the log: kept until it cosigns again

    def _checkpoint_to_submit(self, sign_now: bool) -> TreeCheckpoint | None:
        """The newest checkpoint, after signing one for a tail no checkpoint covers yet (an idle log's
        last entries) once it is `checkpoint_seconds` old, or at once with `sign_now`."""
        newest = self.store.latest_tree_checkpoint()
        grown = self.store.tree_size() > (newest.tree_size if newest else 0)
        due = newest is None or self.clock() - newest.created.timestamp() >= self.store.checkpoint_seconds
        if grown and (sign_now or due):
            return self.store.sign_tree_checkpoint()
        return newest

    def submit(self, sign_now: bool = False) -> Round:
        """One round; never raises for a witness problem (it is counted, logged and returned)."""
        try:
            outcome = self._submit(sign_now)
        except WitnessError as exc:
            self.failures += 1
            self.last_error = str(exc)
            WITNESS_FAILURES.inc()
            outcome = Round(error=str(exc), truncated=isinstance(exc, LogBehindWitness),
                            refused=isinstance(exc, WitnessRefused))
            (log.error if outcome.truncated else log.warning)("audit witness round failed", extra={"error": str(exc)})
        else:
            self.failures, self.last_error = 0, None
        WITNESS_LAG.set(self.store.unwitnessed_seconds(self.witness.key()))
        if outcome.truncated or outcome.refused:
            self.refusal = outcome
        return outcome

    def _submit(self, sign_now: bool) -> Round:
        checkpoint = self._checkpoint_to_submit(sign_now)
        if checkpoint is None:
            return Round()
        stored = self.store.latest_cosignature(self.witness.key())
        if stored is not None and stored.tree_size >= checkpoint.tree_size:
            return Round(cosigned=stored.tree_size)
        old = self.witness_size if self.witness_size is not None else (stored.tree_size if stored else 0)
        for _ in range(2):  # the second try starts from the size a 409 reported
            if old > checkpoint.tree_size:
                raise LogBehindWitness(f"truncated: the witness cosigned {old} entries, the log's newest checkpoint "
                                       f"holds {checkpoint.tree_size}")
            proof = self.store.consistency_proof(old, checkpoint.tree_size) if 0 < old < checkpoint.tree_size else []
            try:
                cosigned = self.post(self.url, checkpoint.note, old, proof, self.witness)
            except WitnessConflict as conflict:
                old = self.witness_size = conflict.latest_size
                continue
            self.store.record_cosignature(checkpoint.tree_size, checkpoint.root_hash, self.witness.key(),
                                          datetime.fromtimestamp(cosigned.timestamp, timezone.utc), cosigned.note)
            self.witness_size, self.refusal = checkpoint.tree_size, None
            return Round(cosigned=checkpoint.tree_size)
        raise WitnessError(f"the witness keeps reporting another size ({old})")

    def next_delay(self, interval: float) -> float:
        """`interval` after a good round; doubling from FIRST_BACKOFF_SECONDS after failures, at most a minute."""
        if not self.failures:
            return interval
        return min(MAX_BACKOFF_SECONDS, FIRST_BACKOFF_SECONDS * 2 ** (self.failures - 1))


def init_app(app: Flask) -> None:
    settings = app.extensions["portal.settings"]
    if settings.audit_witness_url:
        app.extensions[SUBMITTER] = Submitter(app.extensions["portal.audit_store"], settings.audit_witness_url,
                                              Verifier.from_vkey(settings.audit_witness_key))


def submitter() -> Submitter | None:
    return current_app.extensions.get(SUBMITTER)


def round_interval(app: Flask) -> float:
    """Often enough that a healthy witness cosigns each checkpoint soon after it is signed."""
    seconds = app.extensions["portal.settings"].audit_checkpoint_seconds / 2
    return max(0.5, min(MAX_ROUND_INTERVAL_SECONDS, seconds))


def watch_witness(app: Flask) -> None:
    """Background loop of each worker (run.py): one submission round, then wait or back off."""
    witness = app.extensions.get(SUBMITTER)
    if witness is None:
        return
    interval = round_interval(app)
    while True:
        with app.app_context():
            try:
                witness.submit()
            except Exception as exc:  # noqa: BLE001 - the loop must outlive a database hiccup
                witness.failures += 1
                WITNESS_FAILURES.inc()
                log.warning("audit witness round failed", extra={"error": type(exc).__name__})
        socketio.sleep(witness.next_delay(interval))


# --------------------------------------------------------------------------- status and verification


@dataclass(frozen=True)
class WitnessStatus:
    """What the Integrity page shows: the newest cosignature, how long the log has waited, the last error."""

    configured: bool
    url: str = ""
    witness_key: str = ""
    cosigned_size: int | None = None
    cosigned_at: datetime | None = None
    lag_seconds: float = 0.0
    max_lag_seconds: float = 0.0
    last_error: str | None = None

    @property
    def warning(self) -> bool:
        return self.configured and (self.last_error is not None or self.lag_seconds > self.max_lag_seconds)


def status() -> WitnessStatus:
    settings = services.settings()
    if not settings.audit_witness_url:
        return WitnessStatus(configured=False)
    store, key = services.audit_store(), Verifier.from_vkey(settings.audit_witness_key).key()
    cosigned = store.latest_cosignature(key)
    running = submitter()
    return WitnessStatus(True, settings.audit_witness_url, settings.audit_witness_key,
                         cosigned.tree_size if cosigned else None, cosigned.cosigned_at if cosigned else None,
                         store.unwitnessed_seconds(key), settings.audit_witness_max_lag_seconds,
                         running.last_error if running else None)


@dataclass(frozen=True)
class WitnessVerdict:
    """What a verification learnt from the witness: its latest cosigned size, or why it could not ask, and the
    first way the log disagrees with that checkpoint."""

    configured: bool = True
    witnessed_size: int | None = None
    error: str | None = None
    problem: Problem | None = None

    def summary(self, ok: bool) -> str | None:
        """The CLI's witness line (None after a failed verification the witness has nothing to add to)."""
        if not self.configured:
            return "witness: none configured (a lost tail cannot be detected)"
        if self.error is not None:
            return f"witness: {self.error}: a lost tail cannot be ruled out"
        if self.witnessed_size is None:
            return "witness: it has cosigned no checkpoint of this log yet"
        return f"witness: the log holds the {self.witnessed_size} entries it cosigned" if ok else None

    def details(self) -> dict[str, Any]:
        """What the audit.verify event records of the witness check."""
        if not self.configured:
            return {"witness": "none"}
        if self.error is not None:
            return {"witness": "unreachable", "witness_error": self.error[:256]}
        return {"witness": "checked", "witnessed_size": self.witnessed_size}


def ask_witness(check: Callable[[Checkpoint], Problem | None]) -> WitnessVerdict:
    """Fetch the witness's latest cosigned checkpoint of the log (both signatures checked) and `check` the log
    against it: audit.witnessed.check_against_witness after a full run, audit.incremental.check_witnessed
    after an incremental one."""
    settings = services.settings()
    if not settings.audit_witness_url:
        return WitnessVerdict(configured=False)
    log_key = services.audit_store().tree_signer().verifier
    try:
        witnessed = fetch_witnessed(settings.audit_witness_url, log_key, Verifier.from_vkey(settings.audit_witness_key))
    except WitnessError as exc:
        return WitnessVerdict(error=str(exc))
    if witnessed is None:
        return WitnessVerdict()
    return WitnessVerdict(witnessed_size=witnessed.checkpoint.size, problem=check(witnessed.checkpoint))
