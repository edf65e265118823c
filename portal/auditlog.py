"""Verifying the portal's own audit log against its public key.

Features read the log through the store's public methods (``services.audit_store()``, an
``audit.SqlAuditStore``: pages, counts, a chart's accesses) and verify it here, so none of them
touches the audit tables.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from audit import Entry, VerifyKey, VerifyReport, verify_store
from portal import services
from portal.extensions import socketio

Progress = Callable[[int], Any]


def verify_key() -> VerifyKey:
    """The public key auditors pin; the private half never leaves the workers."""
    return services.audit_signing_key().verify_key


def verify_log(progress: Progress | None = None, observe: Callable[[Entry], Any] | None = None) -> VerifyReport:
    """Verify the whole log (its entries re-derived into the Merkle tree, the stored tree and every signed
    tree checkpoint) against the portal's own public key, with a tree checkpoint required at every multiple
    of PORTAL_AUDIT_CHECKPOINT_EVERY up to the head.

    The checkpoints are those that exist when verification starts, all of them: each was signed
    under the append lock, so an intact log reaches its size, and one cut short is reported as
    truncated. (Filtering them by the current head would hide exactly that: a deleted tail lowers
    the head.) ``observe`` sees each entry as it is handed to the verifier; trust what it saw
    only if the report is ok.
    """
    return verify_store(services.audit_store(), verify_key(), cooperative(progress), observe)


def cooperative(progress: Progress | None = None) -> Progress:
    """A verifier's progress callback that also yields to the worker's other green threads."""

    def every_page(count: int) -> None:
        socketio.sleep(0)  # hashing a long log must not stall every other request of this worker
        if progress is not None:
            progress(count)

    return every_page
