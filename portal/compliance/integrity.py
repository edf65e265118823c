"""Integrity: verifying the log on demand (verification.py), recording the result, and showing the last one."""
from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tqdm import tqdm

from audit import ProofError, TreeCheckpoint, TreeError
from audit.proofs import prove_consistency, prove_inclusion
from portal import services
from portal.access import record
from portal.actions import Action
from portal.compliance.verification import VERIFICATIONS, Verification, plan, verify
from portal.exceptions import Conflict, InvalidInput
from portal.people import display_names


def run_verification(actor_role: str | None = None, progress: bool = False, full: bool = False) -> Verification:
    """Verify the log (incrementally unless `full` or no usable record; see verification.py) and record the
    result as an audit.verify event (for the CLI)."""
    run = plan(full)
    if progress:
        with tqdm(total=run.entries_to_hash(), unit="entries", file=sys.stderr, delay=1.0, disable=None,
                  leave=False) as bar:
            report = verify(run, bar.update)
    else:
        report = verify(run)
    record(Action.AUDIT_VERIFY, "allowed", actor_role=actor_role, reason="audit log verification",
           details=report.details())
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
    mode: str  # "full" or "incremental" ("full" for events written before incremental runs)
    since_size: int | None  # incremental: the verified checkpoint's size it started after
    fallback: str | None  # full: why
    tree_size: int | None


def last_verification() -> LastVerification | None:
    """The newest audit.verify result, read back from the audit log itself."""
    found = services.audit_store().latest(VERIFICATIONS, 1)
    if not found:
        return None
    event, details = found[0].event, found[0].event.details
    return LastVerification(
        found[0].seq, event.time, display_names([event.actor_id]).get(event.actor_id or ""),
        event.actor_role, details.get("ok") is True, details.get("entries"), details.get("checkpoints"),
        details.get("problem"), details.get("position"), details.get("message"), details.get("mode") or "full",
        details.get("since_size"), details.get("fallback"), details.get("tree_size"),
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
