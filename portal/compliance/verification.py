"""Verifying the audit log on demand: incrementally from the last verified checkpoint, or in full.

`plan` decides where a run starts. The newest audit.verify event of the log itself carries the record of
the checkpoint that run ended at, signed with the log's key (audit/incremental.py); an incremental run
starts there only if that run passed, its record's signature verifies, and no verification failed since.
Anything else (no record, one that does not verify, a failure since, or `--full` / "Full verification")
makes the run full, and the run says why. A run first signs a checkpoint of the tree as it stands, so that
the next one starts where this one ended; after it passes, the newest checkpoint it verified is recorded.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from audit import AuditFilter, AuditWriteError, Problem, SqlAuditStore, VerifyReport
from audit.incremental import VerifiedHead, anchor_after_full, check_witnessed, verify_since
from audit.note import NoteError, Verifier
from audit.tree_verify import TreeHead
from audit.witnessed import check_against_witness
from portal import services
from portal.actions import Action
from portal.auditlog import cooperative, verify_key, verify_log
from portal.witnessing import WitnessVerdict, ask_witness

log = logging.getLogger("portal.audit")
Progress = Callable[[int], Any]
VERIFICATIONS = AuditFilter(action=Action.AUDIT_VERIFY.value, outcome="allowed")


@dataclass(frozen=True)
class Plan:
    """Where a run starts: after `since` (incremental), or from the first entry (full) because of `fallback`."""

    since: VerifiedHead | None
    fallback: str | None = None

    @property
    def mode(self) -> str:
        return "full" if self.since is None else "incremental"

    def entries_to_hash(self) -> int:
        return max(0, services.audit_store().tree_size() - (self.since.size if self.since else 0))


def _log_key(store: SqlAuditStore) -> Verifier:
    return store.tree_signer().verifier


def plan(full: bool = False) -> Plan:
    """An incremental run from the last verified checkpoint when its record can be trusted, else a full one."""
    if full:
        return Plan(None, "asked for")
    store = services.audit_store()
    found = store.latest(VERIFICATIONS, 1)
    if not found:
        return Plan(None, "the log has not been verified before")
    details = found[0].event.details
    if details.get("ok") is not True:
        return Plan(None, "the last verification failed")
    try:
        since = VerifiedHead.from_details(details, _log_key(store))
    except NoteError as exc:
        return Plan(None, f"the last verification's record of its checkpoint cannot be used: {exc}")
    if any(entry.event.details.get("ok") is not True for entry in store.iter_entries(since.size, VERIFICATIONS)):
        return Plan(None, f"a verification failed after checkpoint {since.checkpoint_id}")
    return Plan(since)


@dataclass
class Verification:
    """One run's result: what the CLI prints, the audit.verify event records and the Integrity page shows."""

    plan: Plan
    ok: bool
    entries: int  # entries hashed
    checkpoints: int  # signatures checked
    problem: Problem | None = None
    tree: TreeHead | None = None
    key_id: str | None = None
    verifier_line: str = ""  # a full run's own summary line
    anchor: VerifiedHead | None = None  # where the next incremental run starts
    witness: WitnessVerdict | None = None  # None: not asked (an incremental run that failed)
    record: dict[str, Any] = field(default_factory=dict)  # the anchor, signed

    @property
    def mode(self) -> str:
        return self.plan.mode

    @property
    def witness_error(self) -> str | None:
        return self.witness.error if self.witness is not None else None

    def summary(self) -> str:
        lines = [self._result_line(), self._mode_line()]
        witness = self.witness.summary(self.ok) if self.witness is not None else None
        return "\n".join(lines + ([witness] if witness else []))

    def _result_line(self) -> str:
        if not self.ok:
            problem = self.problem
            return f"FAILED: {problem.kind} at position {problem.position}: {problem.message} ({self.mode} verification)"
        if self.plan.since is None:
            return self.verifier_line
        since = self.plan.since
        return (f"OK: intact since checkpoint {since.checkpoint_id} ({since.size} entries) (incremental: "
                f"{self.entries} new entries, {self.checkpoints} signatures; Merkle tree of {self.tree.size} entries)")

    def _mode_line(self) -> str:
        if self.plan.since is None:
            line = f"mode: full, {self.entries} entries hashed ({self.plan.fallback})"
        else:
            line = (f"mode: incremental, {self.entries} new entries hashed since checkpoint "
                    f"{self.plan.since.checkpoint_id} ({self.plan.since.size} entries), verified before")
        if self.anchor is not None:
            line += f"; the next run starts from checkpoint {self.anchor.checkpoint_id} ({self.anchor.size} entries)"
        return line

    def details(self) -> dict[str, Any]:
        """The result as the audit.verify event records it."""
        details: dict[str, Any] = {"ok": self.ok, "mode": self.mode, "entries": self.entries,
                                   "checkpoints": self.checkpoints, "key_id": self.key_id}
        if self.tree is not None:
            details["tree_size"] = self.tree.size
        if self.plan.since is not None:
            details.update(since_checkpoint=self.plan.since.checkpoint_id, since_size=self.plan.since.size)
        else:
            details["fallback"] = self.plan.fallback
        details.update(self.witness.details() if self.witness is not None else {"witness": "not asked"})
        if self.problem is not None:
            details.update(problem=self.problem.kind, position=self.problem.position,
                           message=self.problem.message[:256])
        return {**details, **self.record}


def _sign_checkpoint(store: SqlAuditStore) -> None:
    """A checkpoint of the tree as it stands, so this run can end there and the next start there."""
    newest = store.latest_tree_checkpoint()
    if store.tree_size() > (newest.tree_size if newest else 0):
        try:
            store.sign_tree_checkpoint()
        except AuditWriteError as exc:  # the run still verifies; it ends at the newest checkpoint there is
            log.warning("no checkpoint signed before verification", extra={"error": str(exc)})


def _full(store: SqlAuditStore, run: Plan, progress: Progress | None) -> Verification:
    report: VerifyReport = verify_log(progress)
    result = Verification(run, report.ok, report.entries_checked, report.checkpoints_checked, report.problem,
                          report.tree, report.key_id, report.summary())
    if report.ok and report.tree is not None:
        anchor = anchor_after_full(store, _log_key(store), report.tree)
        if isinstance(anchor, Problem):
            result.ok, result.problem = False, anchor
        else:
            result.anchor = anchor
    result.witness = ask_witness(lambda witnessed: check_against_witness(store, witnessed))
    return result


def _incremental(store: SqlAuditStore, run: Plan, progress: Progress | None) -> Verification:
    report = verify_since(store, _log_key(store), run.since, cooperative(progress))
    result = Verification(run, report.ok, report.entries_checked, report.checkpoints_checked, report.problem,
                          report.tree, verify_key().key_id, anchor=report.anchor)
    if report.ok:
        result.witness = ask_witness(lambda witnessed: check_witnessed(store, witnessed, report.tree))
    return result


def verify(run: Plan, progress: Progress | None = None) -> Verification:
    """Run the plan, then ask the witness (when configured); a problem the witness finds fails an OK run."""
    store = services.audit_store()
    _sign_checkpoint(store)
    result = (_full if run.since is None else _incremental)(store, run, progress)
    if result.witness is not None and result.witness.problem is not None:
        result.ok, result.problem = False, result.witness.problem
    if result.ok and result.anchor is not None:
        result.record = result.anchor.signed_details(store.origin, services.audit_signing_key())
    else:
        result.anchor = None
    return result
