"""The one registry of audited actions and of the chart sections they touch.

Every audit event names an ``Action``; its value is the string stored in the log (``chart.read``). Each
member carries the group the access policy decides it by and the words an accounting of disclosures
uses for it; ``Section`` does the same for the parts of a chart (an event's ``resource_type``), with
the words a patient reads in "Who viewed my chart". The policy's sets and every label table are
derived from here, so an action that is not registered cannot be decided, recorded or described.
"""
from __future__ import annotations

from collections.abc import Mapping
from enum import Enum, StrEnum


class Group(Enum):
    """How ``portal.policy.can`` decides an action; ``EVENT`` actions are recorded without a decision."""

    CHART = "chart"  # one patient's chart: the patient, their care teams, break-glass
    CONVERSATION = "conversation"  # a conversation's members
    CLINICIAN = "clinician"
    COMPLIANCE = "compliance"
    ADMIN = "admin"
    EVENT = "event"


class Action(StrEnum):
    """An audited action: its log name, its policy group, and how a disclosure report words it."""

    group: Group
    label: str
    patient_label: str | None

    def __new__(cls, value: str, group: Group, label: str, patient_label: str | None = None) -> Action:
        member = str.__new__(cls, value)
        member._value_ = value
        member.group, member.label, member.patient_label = group, label, patient_label
        return member

    # A chart: decided per patient.
    CHART_READ = "chart.read", Group.CHART, "Read chart"
    CHART_WRITE = "chart.write", Group.CHART, "Wrote to chart", "Added to your chart"
    CHART_EXPORT = "chart.export", Group.CHART, "Downloaded chart"
    CHART_ACCESS_LOG = "chart.access_log", Group.CHART, "Viewed who accessed the chart"
    CHART_DISCLOSURES = "chart.disclosures", Group.CHART, "Produced an accounting of disclosures"
    CHART_NOTE_CREATED = "chart.note.created", Group.EVENT, "Added a visit note"
    # Apps a patient connected (SMART on FHIR): reads through the FHIR API, decided per chart and per scope.
    FHIR_READ = "fhir.read", Group.CHART, "Read through a connected app"
    FHIR_SEARCH = "fhir.search", Group.CHART, "Searched through a connected app"
    APPS_LIST = "apps.list", Group.CHART, "Viewed the connected apps"
    APPS_REVOKE = "apps.revoke", Group.CHART, "Disconnected an app"
    SMART_AUTHORIZE = "smart.authorize", Group.EVENT, "Connected an app", "You connected an app"
    SMART_TOKEN = "smart.token", Group.EVENT, "Issued tokens to a connected app"
    SMART_TOKEN_REVOKED = "smart.token.revoked", Group.EVENT, "Revoked a connected app's token"
    SMART_GRANT_REVOKED = "smart.grant.revoked", Group.EVENT, "Disconnected an app", "An app was disconnected"
    SMART_INTROSPECT = "smart.introspect", Group.EVENT, "Checked a connected app's token"
    # Clinicians' tools.
    PATIENT_SEARCH = "patient.search", Group.CLINICIAN, "Searched for patients"
    PATIENT_SEARCH_RESULTS = "patient.search.results", Group.EVENT, "Search returned"
    PATIENT_SEARCH_HIT = "patient.search.hit", Group.EVENT, "Search result"
    PATIENT_LIST = "patient.list", Group.CLINICIAN, "Listed care-team patients"
    BREAK_GLASS_OPEN = ("break_glass.open", Group.CLINICIAN, "Break-glass access requested",
                        "Emergency access to your chart")
    BREAK_GLASS_GRANTED = ("break_glass.granted", Group.EVENT, "Break-glass access opened",
                           "Emergency access to your chart")
    # Conversations.
    CONVERSATION_START = "conversation.start", Group.CLINICIAN, "Started a conversation"
    CONVERSATION_JOIN = "conversation.join", Group.CONVERSATION, "Opened the care message thread"
    CONVERSATION_SEND = "conversation.send", Group.CONVERSATION, "Sent a care message"
    CONVERSATION_HISTORY = "conversation.history", Group.CONVERSATION, "Read care messages"
    CONVERSATION_READ = "conversation.read", Group.CONVERSATION, "Marked care messages as read"
    CONVERSATION_LIST = "conversation.list", Group.EVENT, "Listed conversations"
    CHAT_CONNECT = "chat.connect", Group.EVENT, "Connected to chat"
    # The audit log itself.
    AUDIT_SEARCH = "audit.search", Group.COMPLIANCE, "Searched the audit log"
    AUDIT_READ = "audit.read", Group.COMPLIANCE, "Read the audit log"
    AUDIT_EXPORT = "audit.export", Group.COMPLIANCE, "Exported the audit log"
    AUDIT_VERIFY = "audit.verify", Group.COMPLIANCE, "Verified the audit log"
    AUDIT_REVIEW = "audit.review", Group.COMPLIANCE, "Reviewed a break-glass access"
    # Administration.
    ADMIN_TEAMS = "admin.teams", Group.ADMIN, "Managed care teams"
    ADMIN_SESSIONS = "admin.sessions", Group.ADMIN, "Managed sign-in sessions"
    ADMIN_KEYS = "admin.keys", Group.ADMIN, "Managed encryption keys"
    ADMIN_PATIENT_LINKS = "admin.patient_links", Group.ADMIN, "Managed links between accounts and charts"
    ADMIN_APPS = "admin.apps", Group.ADMIN, "Managed the apps patients may connect"
    ADMIN_APP_REGISTERED = "admin.app.registered", Group.EVENT, "Registered an app patients may connect"
    ADMIN_PATIENT_LINKED = "admin.patient.linked", Group.EVENT, "Linked to a portal account"
    ADMIN_PATIENT_UNLINKED = "admin.patient.unlinked", Group.EVENT, "Unlinked from a portal account"
    ADMIN_TEAM_CREATED = "admin.team.created", Group.EVENT, "Created a care team"
    ADMIN_TEAM_CLINICIAN_ADDED = "admin.team.clinician_added", Group.EVENT, "Added a clinician to a care team"
    ADMIN_TEAM_CLINICIAN_REMOVED = "admin.team.clinician_removed", Group.EVENT, "Removed a clinician from a care team"
    ADMIN_TEAM_PATIENT_ADDED = "admin.team.patient_added", Group.EVENT, "Added to a care team"
    KEYS_ROTATION_STARTED = "keys.rotation_started", Group.EVENT, "Started re-encryption"
    KEYS_ROTATED = "keys.rotated", Group.EVENT, "Re-encrypted stored data"
    # Signing in and out.
    SIGNIN_SUCCESS = "signin.success", Group.EVENT, "Signed in"
    SIGNIN_FAILURE = "signin.failure", Group.EVENT, "Sign-in refused"
    SIGNOUT = "signout", Group.EVENT, "Signed out"
    SIGNOUT_IDLE_TIMEOUT = "signout.idle_timeout", Group.EVENT, "Signed out after inactivity"
    SIGNOUT_SESSION_EXPIRED = "signout.session_expired", Group.EVENT, "Signed out at the session's end"
    SIGNOUT_BACKCHANNEL = "signout.backchannel", Group.EVENT, "Signed out by the sign-in provider"
    STEPUP_SUCCESS = "stepup.success", Group.EVENT, "Signed in again for a sensitive action"
    STEPUP_FAILURE = "stepup.failure", Group.EVENT, "Fresh sign-in refused"
    SESSION_REVOKED = "session.revoked", Group.EVENT, "Ended a sign-in session"
    # Anything refused before it reached a decision (malformed input, unknown routes).
    REQUEST_REFUSED = "request.refused", Group.EVENT, "Request refused"

    @classmethod
    def find(cls, value: str) -> Action | None:
        """The registered action of a logged name; None for a name this version does not know."""
        return cls._value2member_map_.get(value)

    @classmethod
    def signout_after(cls, reason: str) -> Action:
        """The event of a session that timed out: ``idle_timeout`` or ``session_expired``."""
        return cls(f"signout.{reason}")


class Section(StrEnum):
    """A part of a chart an event touches (its ``resource_type``): how patients and reports name it."""

    patient_label: str
    report_label: str

    def __new__(cls, value: str, patient_label: str, report_label: str) -> Section:
        member = str.__new__(cls, value)
        member._value_ = value
        member.patient_label, member.report_label = patient_label, report_label
        return member

    @classmethod
    def find(cls, value: str | None) -> Section | None:
        return cls._value2member_map_.get(value) if value else None

    CHART = "chart", "Your chart", "whole chart"
    DEMOGRAPHICS = "demographics", "Your personal details", "demographics"
    PROBLEMS = "problems", "Your problems and diagnoses", "problems"
    MEDICATIONS = "medications", "Your medications", "medications"
    ALLERGIES = "allergies", "Your allergies", "allergies"
    RESULTS = "results", "A test result", "results"
    NOTES = "notes", "Visit notes", "visit notes"
    FHIR_BUNDLE = "fhir_bundle", "Download of your chart", "FHIR record"
    BREAK_GLASS = "break_glass", "Emergency access to your chart", "break-glass"
    SEARCH_RESULT = "search_result", "Your name and date of birth, in a patient search", "search result"
    ACCESS_LOG = "access_log", "Who viewed your chart", "access log"
    CONNECTED_APPS = "connected_apps", "Your connected apps", "connected apps"
    DISCLOSURES = ("disclosures", "The accounting of who accessed your chart (compliance review)",
                   "accounting of disclosures")


def family(prefix: str) -> str:
    """A family of actions by the start of their names (``"chart."``), as log filters match them; refused when
    no registered action is of it, so a typo fails at import, not as a filter that silently matches nothing."""
    if not any(action.value.startswith(prefix) for action in Action):
        raise ValueError(f"no registered action starts with {prefix!r}")
    return prefix


CHART_WORK = family("chart.")  # staff reading or writing a chart
BREAK_GLASS = family("break_glass.")
SIGN_IN = family("signin.")
#: Actions an app takes for the patient who connected it: each is a disclosure to that app, listed in "Who viewed
#: my chart" and the accounting of disclosures although the patient's own account made the request.
APP_ACCESS = family("fhir.")
#: What a patient is shown as an access of their chart ("Who viewed my chart", the accounting of disclosures).
PATIENT_VISIBLE_ACCESSES = (CHART_WORK, BREAK_GLASS, Action.PATIENT_SEARCH_HIT, APP_ACCESS)


def is_break_glass(action: str, details: Mapping[str, object]) -> bool:
    """A break-glass step itself, or an access made under an emergency grant (its details say so)."""
    return action.startswith(BREAK_GLASS) or "break_glass" in details

#: The part of a chart each FHIR resource type is: how an app's reads are named in the access log and reports.
FHIR_SECTIONS = {"Patient": Section.DEMOGRAPHICS, "Condition": Section.PROBLEMS, "MedicationRequest": Section.MEDICATIONS,
                 "AllergyIntolerance": Section.ALLERGIES, "Observation": Section.RESULTS,
                 "DocumentReference": Section.NOTES}

#: The sections of a chart the pages and the JSON API show, in order.
CHART_SECTIONS = (Section.DEMOGRAPHICS, Section.PROBLEMS, Section.MEDICATIONS, Section.ALLERGIES, Section.RESULTS,
                  Section.NOTES)
