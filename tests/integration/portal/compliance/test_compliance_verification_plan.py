"""Where a verification starts (portal/compliance/verification.py `plan`), in the in-process portal: after the
checkpoint the last passing run recorded, unless that record cannot be trusted. An attacker who can append
to the audit tables (but has no signing key) can only make runs full: by replaying an older genuine record
after a verification failed, or writing a record without a valid signature."""
from __future__ import annotations

from audit import AuditEvent
from portal import services
from portal.actions import Action
from portal.compliance.integrity import run_verification
from portal.compliance.verification import VERIFICATIONS, plan


def _append_verify_event(store, details: dict) -> None:
    """An audit.verify event written straight into the log, as someone with the database could."""
    store.append(AuditEvent(action=Action.AUDIT_VERIFY.value, outcome="allowed", details=details))


def _grow(store, count: int) -> None:
    store.append_many([AuditEvent(action="chart.read", outcome="allowed", actor_id=f"u{i}") for i in range(count)])


def _verified_once():
    """The store after 20 entries and one passing verification, and that verification's event details."""
    store = services.audit_store()
    _grow(store, 20)
    run_verification(actor_role="operator")
    return store, dict(store.latest(VERIFICATIONS, 1)[0].event.details)


def test_a_run_after_a_passing_run_is_incremental_from_the_checkpoint_it_recorded(app):
    with app.app_context():
        _grow(services.audit_store(), 20)
        assert plan().fallback == "the log has not been verified before"
        first = run_verification(actor_role="operator")
        assert first.ok and first.mode == "full" and first.anchor.size == 20
        _grow(services.audit_store(), 5)
        following = plan()
        assert following.mode == "incremental" and following.since == first.anchor
        second = run_verification(actor_role="operator")
        assert second.ok and second.mode == "incremental" and second.entries == 6  # its predecessor's event, and 5
        assert plan(full=True).fallback == "asked for"


def test_a_replayed_record_after_a_failed_verification_makes_the_run_full(app):
    with app.app_context():
        store, genuine = _verified_once()
        _append_verify_event(store, {"ok": False, "mode": "full", "problem": "edited", "position": 3})
        assert plan().fallback == "the last verification failed"
        _append_verify_event(store, genuine)  # the old record, signature and all, as the newest event
        assert plan().fallback.startswith("a verification failed after checkpoint")


def test_a_record_without_a_valid_signature_makes_the_run_full(app):
    with app.app_context():
        store, genuine = _verified_once()
        _append_verify_event(store, {**genuine, "verified_size": genuine["verified_size"] + 1})
        assert plan().fallback.startswith("the last verification's record of its checkpoint cannot be used: "
                                          f"invalid signature for key {store.origin}/verified+")
        _append_verify_event(store, {"ok": True, "mode": "full", "entries": 10})  # a record from before they were signed
        assert plan().fallback.endswith("it names no signed checkpoint")
