"""The rules for reading and writing charts. Views call these after portal.access.authorize."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from audit import AuditEvent
from portal import services
from portal.access import authorize, record
from portal.actions import PATIENT_VISIBLE_ACCESSES, Action, Section, is_break_glass
from portal.crypto import blind_index_terms
from portal.db import db_session
from portal.exceptions import Conflict, InvalidInput, NotFound, SearchLimitReached, found
from portal.models import BreakGlass, CareTeam, CareTeamMember, CareTeamPatient, LabResult, Patient, User, VisitNote
from portal.people import app_reader, display_names
from portal.policy import OWN_ACCESS_REASONS, ChartRef
from portal.records import reading
from portal.records.reading import ChartRecord
from portal.validation import checked_mrn, is_storable_text, parse_id

NOTE_TITLE_MAX = 200
NOTE_TEXT_MAX = 20_000
REASON_MIN, REASON_MAX = 10, 500
# Letters by Unicode's reckoning that print as blank space (Hangul fillers): no part of a readable reason.
BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0")
SEARCH_LIMIT = 50
ACCESS_LOG_LIMIT = 200
# What "Who viewed my chart" lists: reads and writes, emergency access, appearing in a search, apps' reads.


def read_chart(patient_id: str) -> ChartRecord:
    """The whole chart, to show it (pages, the JSON API, the FHIR download): plain decrypted values."""
    return found(reading.read_chart(patient_id))


def get_patient(patient_id: str) -> Patient:
    """The patient's ORM row, to write to the chart (a note, a break-glass grant)."""
    return found(db_session.get(Patient, patient_id))


def get_result(patient_id: str, result_id: str) -> LabResult:
    result = db_session.get(LabResult, parse_id(result_id, "result id"))
    if result is None or result.patient_id != patient_id:
        raise NotFound("not_found", "There is no such result.")
    return result


def search_patients(mrn: str = "", name: str = "", birth_date: str = "") -> list[Patient]:
    """Exact-match search through blind indexes: never decrypts the population to scan it."""
    conditions = []
    if mrn.strip():
        conditions.append(Patient.mrn_bidx.in_(blind_index_terms(Patient, "mrn", checked_mrn(mrn))))
    if name.strip():
        if len(name) > 100:
            raise InvalidInput("bad_name", "A family name has at most 100 characters.")
        conditions.append(Patient.family_name_bidx.in_(blind_index_terms(Patient, "family_name", name)))
    if birth_date.strip():
        try:
            parsed = date.fromisoformat(birth_date.strip())
        except ValueError:
            raise InvalidInput("bad_birth_date", "Dates of birth are written YYYY-MM-DD.") from None
        conditions.append(Patient.birth_date_bidx.in_(blind_index_terms(Patient, "birth_date", parsed)))
    if not conditions:
        raise InvalidInput("empty_search", "Give an MRN, a family name or a date of birth.")
    return list(db_session.scalars(sa.select(Patient).where(*conditions).limit(SEARCH_LIMIT)))


def search_within_limit(mrn: str, name: str, birth_date: str, listed_recently: Callable[[], set[str]],
                        limit: int) -> list[Patient]:
    """``search_patients``, refused when it would take the patients listed to this user within the hour
    (``listed_recently()``) past ``limit``; patients already listed count once, so repeating a search is free."""
    results = search_patients(mrn, name, birth_date)
    if not results:
        return results
    listed = listed_recently()
    new = {patient.id for patient in results} - listed
    if new and len(listed) + len(new) > limit:
        raise SearchLimitReached(limit, len(listed), len(new))
    return results


def care_team_patients(user: User) -> list[tuple[CareTeam, list[Patient]]]:
    teams = db_session.scalars(
        sa.select(CareTeam).join(CareTeamMember, CareTeamMember.team_id == CareTeam.id)
        .where(CareTeamMember.user_id == user.id).order_by(CareTeam.name)
    ).all()
    listing = []
    for team in teams:
        patients = db_session.scalars(
            sa.select(Patient).join(CareTeamPatient, CareTeamPatient.patient_id == Patient.id)
            .where(CareTeamPatient.team_id == team.id)
        ).all()
        listing.append((team, sorted(patients, key=lambda p: (p.family_name, p.given_name))))
    return listing


def write_note(patient_id: str, author: User, title: str, text: str,
               submission_id: str | None) -> tuple[VisitNote, bool]:
    """The one way a note is written (page and API alike): the chart-write decision, the note stored once per
    submission (``add_note``), and its CHART_NOTE_CREATED entry when it is new. Returns (note, created)."""
    authorize(Action.CHART_WRITE, ChartRef(patient_id, Section.NOTES))
    note, created = add_note(get_patient(patient_id), author, title, text, submission_id)
    if created:
        record(Action.CHART_NOTE_CREATED, "allowed", patient_id=patient_id, resource_type="note", resource_id=note.id)
    return note, created


def add_note(patient: Patient, author: User, title: str, text: str, submission_id: str | None) -> tuple[VisitNote, bool]:
    """Store a visit note once per form submission; returns (note, created).

    A submission id belongs to its author and patient: reused anywhere else it is a conflict, and
    the note it names is never returned (it may be another patient's).
    """
    title, text = (title or "").strip(), (text or "").strip()
    if not title or not text:
        raise InvalidInput("empty_note", "A note needs a title and some text.")
    if len(title) > NOTE_TITLE_MAX or len(text) > NOTE_TEXT_MAX:
        raise InvalidInput("note_too_long", f"Titles hold {NOTE_TITLE_MAX} and notes {NOTE_TEXT_MAX} characters at most.")
    if not (is_storable_text(title) and is_storable_text(text)):
        raise InvalidInput("bad_request", "The note holds characters that are not text (a broken character code).")
    if submission_id:
        submission_id = parse_id(submission_id, "form submission id")
        existing = _submitted(author, submission_id)
        if existing is not None:
            return _same_submission(existing, patient), False
    note = VisitNote(patient_id=patient.id, author_id=author.id, title=title, text=text, submission_id=submission_id)
    db_session.add(note)
    try:
        db_session.commit()
    except IntegrityError:
        db_session.rollback()
        existing = _submitted(author, submission_id) if submission_id else None
        if existing is None:
            raise
        return _same_submission(existing, patient), False
    return note, True


def _submitted(author: User, submission_id: str) -> VisitNote | None:
    return db_session.scalars(sa.select(VisitNote).where(
        VisitNote.author_id == author.id, VisitNote.submission_id == submission_id)).first()


def _same_submission(note: VisitNote, patient: Patient) -> VisitNote:
    if note.patient_id != patient.id:
        raise Conflict("submission_reused", "That form submission id was already used for another note.")
    return note


def checked_break_glass_reason(reason: str | None) -> str:
    """The reason as it will be shown in the patient's accounting of disclosures: line breaks and runs of
    spaces become one space, and characters that print nothing or reorder text are refused."""
    reason = " ".join((reason or "").split())
    if not REASON_MIN <= len(reason) <= REASON_MAX:
        raise InvalidInput("bad_reason", f"Explain the emergency in {REASON_MIN} to {REASON_MAX} characters.")
    if not reason.isprintable():
        raise InvalidInput("bad_reason", "Explain the emergency in plain text: control and formatting characters "
                                         "cannot be shown to the patient.")
    if sum(1 for character in reason if character.isalnum() and character not in BLANK_LETTERS) < REASON_MIN:
        raise InvalidInput("bad_reason", f"Explain the emergency in words: at least {REASON_MIN} letters or digits.")
    return reason


def open_break_glass(user: User, patient: Patient, reason: str, minutes: int) -> BreakGlass:
    """A grant for a reason already checked by ``checked_break_glass_reason``."""
    now = datetime.now(timezone.utc)
    grant = BreakGlass(user_id=user.id, patient_id=patient.id, reason=reason, started_at=now,
                       expires_at=now + timedelta(minutes=minutes))
    db_session.add(grant)
    db_session.commit()
    return grant


@dataclass(frozen=True)
class AccessLogEntry:
    time: datetime
    who: str
    role: str
    what: str
    break_glass: bool


def chart_access_log(patient_id: str, limit: int = ACCESS_LOG_LIMIT) -> list[AccessLogEntry]:
    """Who opened this patient's chart (other people, and apps the patient connected; successful accesses,
    newest first)."""
    entries = services.audit_store().accesses_to(patient_id, not_reasons=OWN_ACCESS_REASONS,
                                                 actions=PATIENT_VISIBLE_ACCESSES, newest_first=True, limit=limit)
    names = display_names(entry.event.actor_id for entry in entries)
    return [
        AccessLogEntry(
            time=entry.event.time,
            who=app_reader(entry.event.details) or names.get(entry.event.actor_id or "", "Clinic staff"),
            role="App you connected" if app_reader(entry.event.details) else
            (entry.event.actor_role or "staff").replace(",", ", ").title(),
            what=_access_description(entry.event),
            break_glass=is_break_glass(entry.event.action, entry.event.details),
        )
        for entry in entries
    ]


def _access_description(event: AuditEvent) -> str:
    """How the patient reads an access: by the action when it has its own words, else by the part of the chart."""
    action = Action.find(event.action)
    if action is not None and action.patient_label:
        return action.patient_label
    section = Section.find(event.resource_type)
    if action is Action.FHIR_SEARCH and section is not None:  # an app listed a part of the chart
        return f"Listed your {section.report_label}"
    return section.patient_label if section else (event.resource_type or "Your chart").replace("_", " ")
