"""The one access decision of the portal: ``can(user, action, resource) -> Decision``.

Every view and Socket.IO handler reaches it through ``portal.access.authorize``, which also writes
the audit event, so no access path can skip either. The rules:

* a patient reads only their own chart (and who accessed it);
* a clinician reads and writes the charts of patients on their care teams;
* break-glass lets a clinician open any chart for a limited time after typing a reason;
* compliance officers and administrators see no clinical content;
* a chart's accounting of disclosures goes to the patient and to compliance officers;
* a conversation is open to its members: direct conversations to their two clinicians, a team's
  conversation to the team's clinicians, a patient's thread to the patient and their care teams;
* an app a patient connected reads and searches only that patient's chart, through the FHIR API,
  and only what the scopes the patient granted cover (``FhirRef``); who viewed a chart and which apps
  are connected to it are the patient's own business.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import sqlalchemy as sa

from portal.actions import Action, Group
from portal.db import db_session
from portal.models import BreakGlass, CareTeamMember, CareTeamPatient, Conversation, ConversationMember, Patient, User
from portal.scopes import READ, SEARCH, ScopeSet

ROLE_OF_GROUP = {Group.CLINICIAN: "clinician", Group.COMPLIANCE: "compliance", Group.ADMIN: "admin"}
# Chart actions only the patient may take: their care team does not see who viewed the chart or which apps read it.
PATIENT_ONLY = frozenset({Action.CHART_ACCESS_LOG, Action.APPS_LIST, Action.APPS_REVOKE})
# The reasons of the decisions that let patients into their own chart and care thread: an access recorded
# with one of them is the patient's own, never a disclosure (decided from the signed entry, not a table).
OWN_CHART = "own chart"
OWN_CARE_THREAD = "own care thread"
OWN_ACCESS_REASONS = frozenset({OWN_CHART, OWN_CARE_THREAD})
# What an app's request does, in SMART's words: read one resource, or search.
APP_INTERACTIONS = {Action.FHIR_READ: READ, Action.FHIR_SEARCH: SEARCH}


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    break_glass_id: str | None = None
    conceal: bool = False  # deny as "not found" so the caller learns nothing about the record's existence

    @property
    def outcome(self) -> str:
        return "allowed" if self.allowed else "denied"


@dataclass(frozen=True)
class ChartRef:
    patient_id: str
    section: str = "chart"


@dataclass(frozen=True)
class AppAccess:
    """An app acting for the person who connected it: its client, the grant, the token's patient and scopes."""

    client_id: str
    name: str
    grant_id: str
    patient_id: str
    scopes: ScopeSet

    def audit_details(self) -> dict[str, str]:
        """How every audit event of the app's requests names it: identifiers only."""
        return {"client_id": self.client_id, "app": self.name, "grant": self.grant_id, "scopes": self.scopes.text}


@dataclass(frozen=True)
class FhirRef(ChartRef):
    """A FHIR read or search of one chart by an app: the resource type, the resource (a read) and the
    categories it has (a read) or asks for (a search), as (system, code) pairs."""

    app: AppAccess | None = None
    resource_type: str = ""
    resource_id: str | None = None
    categories: tuple[tuple[str | None, str], ...] = ()


def allow(reason: str, **kwargs) -> Decision:
    return Decision(True, reason, **kwargs)


def deny(reason: str, **kwargs) -> Decision:
    return Decision(False, reason, **kwargs)


def can(user: User | None, action: Action, resource: object = None) -> Decision:
    """Decide whether ``user`` may perform ``action`` on ``resource``; the reason is always recorded."""
    if user is None or not getattr(user, "is_authenticated", False):
        return deny("not signed in")
    group = Action(action).group
    if group is Group.CHART:
        return _chart_decision(user, action, resource)
    if group is Group.CONVERSATION:
        return _conversation_decision(user, resource)
    role = ROLE_OF_GROUP.get(group)
    if role is None:
        return deny(f"{action} is recorded, never decided")
    return allow(f"{role} role") if user.has_role(role) else deny(f"requires the {role} role")


def _chart_decision(user: User, action: Action, chart: ChartRef) -> Decision:
    if not patient_exists(chart.patient_id):
        return deny("no such patient", conceal=True)
    if action in APP_INTERACTIONS or isinstance(chart, FhirRef):
        return _app_decision(user, action, chart)
    if user.has_role("patient") and user.patient_id == chart.patient_id:
        if action == Action.CHART_WRITE:
            return deny("patients cannot edit their chart")
        return allow(OWN_CHART)
    if action == Action.CHART_DISCLOSURES:  # someone else's chart: for compliance review only
        if user.has_role("compliance"):
            return allow("compliance review")
        if user.has_role("clinician") or user.has_role("admin"):
            return deny("requires the compliance role")
        return deny("not the patient's own chart", conceal=True)
    if user.has_role("clinician") and action not in PATIENT_ONLY:
        if on_care_team(user.id, chart.patient_id):
            return allow("care team member")
        grant = active_break_glass(user.id, chart.patient_id)
        if grant is not None:
            return allow("break-glass access", break_glass_id=grant.id)
        return deny("not on the patient's care team")
    if user.has_role("compliance") or user.has_role("admin"):
        return deny("role has no access to clinical content")
    return deny("not the patient's own chart", conceal=True)


def _app_decision(user: User, action: Action, ref: ChartRef) -> Decision:
    """An app reads for the patient who connected it: that chart only, within the scopes granted."""
    app = ref.app if isinstance(ref, FhirRef) else None
    if app is None or action not in APP_INTERACTIONS:
        return deny("apps read charts only through the FHIR API, and people only through the portal")
    if ref.patient_id != app.patient_id or not (user.has_role("patient") and user.patient_id == ref.patient_id):
        return deny("not the patient who connected the app", conceal=True)
    interaction = APP_INTERACTIONS[action]
    if not app.scopes.permits(ref.resource_type, interaction, ref.categories):
        verb = "read" if interaction == READ else "search"
        return deny(f"the scopes granted to the app do not cover {verb} of {ref.resource_type}")
    return allow("app connected by the patient")


def _conversation_decision(user: User, conversation: Conversation | None) -> Decision:
    if conversation is None:
        return deny("unknown conversation", conceal=True)
    if conversation.kind == "direct":
        member = db_session.get(ConversationMember, (conversation.id, user.id))
        return allow("conversation member") if member else deny("not a member of this conversation")
    if conversation.kind == "team":
        if user.has_role("clinician") and is_team_member(user.id, conversation.team_id):
            return allow("care team member")
        return deny("not on this care team")
    if user.has_role("patient") and user.patient_id == conversation.patient_id:
        return allow(OWN_CARE_THREAD)
    if user.has_role("clinician") and on_care_team(user.id, conversation.patient_id):
        return allow("care team member")
    return deny("not on the patient's care team")


def patient_exists(patient_id: str) -> bool:
    """Whether the chart exists, without loading (and decrypting) it."""
    return db_session.execute(sa.select(sa.literal(1)).where(Patient.id == patient_id)).first() is not None


def on_care_team(user_id: str, patient_id: str) -> bool:
    query = (
        sa.select(sa.literal(1))
        .select_from(CareTeamMember)
        .join(CareTeamPatient, CareTeamPatient.team_id == CareTeamMember.team_id)
        .where(CareTeamMember.user_id == user_id, CareTeamPatient.patient_id == patient_id)
        .limit(1)
    )
    return db_session.execute(query).first() is not None


def is_team_member(user_id: str, team_id: str | None) -> bool:
    return team_id is not None and db_session.get(CareTeamMember, (team_id, user_id)) is not None


def active_break_glass(user_id: str, patient_id: str) -> BreakGlass | None:
    query = (
        sa.select(BreakGlass)
        .where(
            BreakGlass.user_id == user_id,
            BreakGlass.patient_id == patient_id,
            BreakGlass.expires_at > datetime.now(timezone.utc),
        )
        .order_by(BreakGlass.expires_at.desc())
        .limit(1)
    )
    return db_session.scalars(query).first()
