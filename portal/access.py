"""The one call site shape for access: decide with policy.can and write the audit event together.

``authorize`` is what views and Socket.IO handlers call before touching PHI; ``record`` writes an
event that has no policy decision (sign-in, sign-out, exports, key rotation). Both raise
``AuditUnavailable`` when the event cannot be appended, so the caller never serves PHI unaudited.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import TypeVar

from flask import current_app, has_request_context
from flask_login import current_user

from audit import AuditEvent, AuditWriteError
from portal import policy, services
from portal.actions import Action
from portal.exceptions import AccessDenied, AuditUnavailable
from portal.observability import AUDIT_APPENDS, AUDIT_FAILURES, LAST_AUDIT_FAILURE
from portal.policy import ChartRef, Decision, FhirRef
from portal.request_fields import acting_app_details, audit_fields
from portal.signals import audit_entry_appended

log = logging.getLogger(__name__)
T = TypeVar("T")


def authorize(action: Action, resource: object = None, *, details: Mapping | None = None) -> Decision:
    """Decide, audit the decision, and raise AccessDenied when it is a refusal."""
    decision = policy.can(_signed_in_user(), action, resource)
    record(
        action,
        decision.outcome,
        reason=decision.reason,
        details={**(details or {}), **({"break_glass": decision.break_glass_id} if decision.break_glass_id else {})},
        **_resource_fields(resource),
    )
    if not decision.allowed:
        raise AccessDenied(action, decision.reason, conceal=decision.conceal, resource=resource)
    return decision


def authorized(action: Action, work: Callable[[], T], details: Callable[[T], Mapping], *,
               resource: object = None, refused_details: Mapping | None = None) -> T:
    """Run ``work`` only for someone the policy allows, then authorize (decide + audit) with details
    of its result, e.g. the count a search found. A refusal is audited and raised before any work."""
    if not policy.can(_signed_in_user(), action, resource).allowed:
        authorize(action, resource, details=refused_details)
    result = work()
    authorize(action, resource, details=details(result))
    return result


def record(
    action: Action,
    outcome: str,
    *,
    reason: str | None = None,
    patient_id: str | None = None,
    resource_type: str | None = None,
    resource_id: str | None = None,
    details: Mapping | None = None,
    actor_id: str | None = None,
    actor_role: str | None = None,
    from_request: bool = True,
) -> None:
    """Append one audit event for the current request; never include PHI values in it.

    ``from_request=False`` is for events about someone other than the requester (e.g. a listener
    dropped from a conversation), which must not carry the requester's address or session.
    """
    _append([_event(action, outcome, reason=reason, patient_id=patient_id, resource_type=resource_type,
                    resource_id=resource_id, details=details, actor_id=actor_id, actor_role=actor_role,
                    from_request=from_request)])


def record_each(action: Action, outcome: str, patient_ids: list[str], *, reason: str, resource_type: str) -> None:
    """One event per patient, appended together: e.g. every patient a search listed."""
    if patient_ids:
        _append([_event(action, outcome, reason=reason, patient_id=patient_id, resource_type=resource_type,
                        resource_id=patient_id) for patient_id in patient_ids])


def role_label(user) -> str | None:
    """How an audit event names a user's roles: sorted and comma-separated."""
    return ",".join(sorted(user.role_set)) if user is not None else None


def _signed_in_user():
    return current_user if has_request_context() and current_user and current_user.is_authenticated else None


def _event(action: Action, outcome: str, *, details: Mapping | None = None, actor_id: str | None = None,
           actor_role: str | None = None, from_request: bool = True, **fields) -> AuditEvent:
    """The event for the current request: its person, and the app acting for them when an app's token made it."""
    user = _signed_in_user()
    return AuditEvent.create(
        actor_id=actor_id or (user.id if user else None),
        actor_role=actor_role or role_label(user),
        action=Action(action).value,  # an unregistered action fails here, before anything is stored
        outcome=outcome,
        details={**(acting_app_details() if from_request else {}), **(details or {})},
        **fields,
        **(audit_fields() if from_request else {}),
    )


def _append(events: list[AuditEvent]) -> None:
    try:
        entries = services.audit_appender().append_many(events)
    except AuditWriteError as exc:
        current_app.extensions[LAST_AUDIT_FAILURE] = time.monotonic()
        AUDIT_FAILURES.inc()
        log.error("audit append failed", extra={"action": events[0].action, "error": type(exc).__name__})
        raise AuditUnavailable() from exc
    sender = current_app._get_current_object()
    for entry in entries:
        AUDIT_APPENDS.labels(entry.event.outcome).inc()
        try:
            audit_entry_appended.send(sender, entry=entry)
        except Exception as exc:  # noqa: BLE001 - a live view of the log must never fail the audited request
            log.warning("audit entry listener failed", extra={"seq": entry.seq, "error": type(exc).__name__})


def _resource_fields(resource: object) -> dict:
    if isinstance(resource, FhirRef):
        return {"patient_id": resource.patient_id, "resource_type": resource.section,
                "resource_id": resource.resource_id or resource.patient_id}
    if isinstance(resource, ChartRef):
        return {"patient_id": resource.patient_id, "resource_type": resource.section, "resource_id": resource.patient_id}
    conversation_id = getattr(resource, "id", None)
    if conversation_id is not None:
        return {
            "patient_id": getattr(resource, "patient_id", None),
            "resource_type": type(resource).__name__.lower(),
            "resource_id": conversation_id,
        }
    return {}
