"""Integrity: verifying the log on demand, recording the result, and showing the last one."""
from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tqdm import tqdm

from audit import AuditFilter, ProofError, TreeCheckpoint, TreeError, VerifyReport
from audit.proofs import prove_consistency, prove_inclusion
from portal import services
from portal.access import record
from portal.actions import Action
from portal.exceptions import Conflict, InvalidInput
from portal.people import display_names
from portal.witnessing import WitnessedReport, verify_with_witness, witness_details


def verification_details(report: VerifyReport) -> dict[str, Any]:
    """The result as the audit.verify event records it."""
    details: dict[str, Any] = {"ok": report.ok, "entries": report.entries_checked,
                               "checkpoints": report.checkpoints_checked, "key_id": report.key_id}
    if isinstance(report, WitnessedReport):
        details.update(witness_details(report))
    if report.problem is not None:
        details.update(problem=report.problem.kind, position=report.problem.position,
                       message=report.problem.message[:256])
    return details


def run_verification(actor_role: str | None = None, progress: bool = False) -> WitnessedReport:
    """Verify the log, and against its witness when one is configured; record the result as an
    audit.verify event (for the CLI)."""
    if progress:
        with tqdm(total=services.audit_store().count(), unit="entries", file=sys.stderr, delay=1.0,
                  disable=None, leave=False) as bar:
            report = verify_with_witness(bar.update)
    else:
        report = verify_with_witness()
    record(Action.AUDIT_VERIFY, "allowed", actor_role=actor_role, reason="audit log verification",
           details=verification_details(report))
    return report


@dataclass(frozen=True)
class LastVerification:
    seq: int
    time: datetime
    actor_name: str | None
    actor_role: str | None
    ok: bool
    entries: int | None
    checkpoints: int | None
    problem: str | None
    position: int | None
    message: str | None


def last_verification() -> LastVerification | None:
    """The newest audit.verify result, read back from the audit log itself."""
    found = services.audit_store().latest(AuditFilter(action=Action.AUDIT_VERIFY, outcome="allowed"), 1)
    if not found:
        return None
    event, details = found[0].event, found[0].event.details
    return LastVerification(
        found[0].seq, event.time, display_names([event.actor_id]).get(event.actor_id or ""),
        event.actor_role, details.get("ok") is True, details.get("entries"), details.get("checkpoints"),
        details.get("problem"), details.get("position"), details.get("message"),
    )


@dataclass(frozen=True)
class TreeStatus:
    """What the Integrity page shows of the signed tree checkpoints: the log's note verifier key
    (`name+keyid+base64`, what a witness or an auditor pins) and the newest checkpoint."""

    verifier_key: str
    latest: TreeCheckpoint | None


def tree_status() -> TreeStatus:
    store = services.audit_store()
    return TreeStatus(store.tree_signer().vkey(), store.latest_tree_checkpoint())


def inclusion_proof(index: int, size: int | None) -> dict[str, Any]:
    """The RFC 9162 inclusion proof of the entry with seq ``index + 1`` (``python -m audit prove-inclusion``)."""
    return _proof(lambda: prove_inclusion(services.audit_store(), index, size))


def consistency_proof(old: int, new: int | None) -> dict[str, Any]:
    """The RFC 9162 consistency proof between two tree sizes (``python -m audit prove-consistency``)."""
    return _proof(lambda: prove_consistency(services.audit_store(), old, new))


def _proof(prove: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return prove()
    except (TreeError, ProofError) as exc:  # before ValueError: ProofError is one
        raise Conflict("tree_mismatch", f"The stored tree does not match the log: {exc}. Verify the log.") from None
    except ValueError as exc:
        raise InvalidInput("bad_proof_request", f"{exc}.") from None
