"""The rules for reading and writing charts. Views call these after portal.access.authorize."""
from __future__ import annotations

import re
import uuid
from datetime import date, datetime, timedelta, timezone

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload

from portal.crypto import blind_index_terms
from portal.db import db_session
from portal.errors import ApiError
from portal.models import BreakGlass, CareTeam, CareTeamMember, CareTeamPatient, LabResult, Patient, User, VisitNote

NOTE_TITLE_MAX = 200
NOTE_TEXT_MAX = 20_000
REASON_MIN, REASON_MAX = 10, 500
SEARCH_LIMIT = 50
SECTIONS = ("demographics", "problems", "medications", "allergies", "results", "notes")
_MRN = re.compile(r"^[A-Za-z0-9 -]{3,32}$")


def parse_id(value: str, what: str = "patient id") -> str:
    """Identifiers are UUIDs; anything else is a 400, not a database lookup."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        raise ApiError(400, "malformed_id", f"The {what} is malformed.") from None


CHART_SECTIONS_LOADED = (
    selectinload(Patient.conditions), selectinload(Patient.medications), selectinload(Patient.allergies),
    selectinload(Patient.results), selectinload(Patient.notes).joinedload(VisitNote.author),
)


def get_patient(patient_id: str, *, whole_chart: bool = True) -> Patient:
    """The patient, with every chart section loaded in a handful of queries rather than one per section."""
    patient = db_session.get(Patient, patient_id, options=CHART_SECTIONS_LOADED if whole_chart else ())
    if patient is None:
        raise ApiError(404, "not_found", "There is no such record.")
    return patient


def get_result(patient: Patient, result_id: str) -> LabResult:
    result = db_session.get(LabResult, parse_id(result_id, "result id"))
    if result is None or result.patient_id != patient.id:
        raise ApiError(404, "not_found", "There is no such result.")
    return result


def search_patients(mrn: str = "", name: str = "", birth_date: str = "") -> list[Patient]:
    """Exact-match search through blind indexes: never decrypts the population to scan it."""
    conditions = []
    if mrn.strip():
        conditions.append(Patient.mrn_bidx.in_(blind_index_terms(Patient, "mrn", checked_mrn(mrn))))
    if name.strip():
        if len(name) > 100:
            raise ApiError(400, "bad_name", "A family name has at most 100 characters.")
        conditions.append(Patient.family_name_bidx.in_(blind_index_terms(Patient, "family_name", name)))
    if birth_date.strip():
        try:
            parsed = date.fromisoformat(birth_date.strip())
        except ValueError:
            raise ApiError(400, "bad_birth_date", "Dates of birth are written YYYY-MM-DD.") from None
        conditions.append(Patient.birth_date_bidx.in_(blind_index_terms(Patient, "birth_date", parsed)))
    if not conditions:
        raise ApiError(400, "empty_search", "Give an MRN, a family name or a date of birth.")
    return list(db_session.scalars(sa.select(Patient).where(*conditions).limit(SEARCH_LIMIT)))


def checked_mrn(mrn: str) -> str:
    """The MRN without surrounding spaces; 400 when it cannot be one."""
    mrn = (mrn or "").strip()
    if not _MRN.match(mrn):
        raise ApiError(400, "bad_mrn", "An MRN has 3 to 32 letters, digits, spaces or dashes.")
    return mrn


def patient_by_mrn(mrn: str) -> Patient | None:
    """The one chart with this MRN, found through its blind index; None when no chart, or more than
    one, has it (an ambiguous MRN links nobody). A malformed MRN is a 400 (``checked_mrn``)."""
    terms = blind_index_terms(Patient, "mrn", checked_mrn(mrn))
    found = db_session.scalars(sa.select(Patient).where(Patient.mrn_bidx.in_(terms)).limit(2)).all()
    return found[0] if len(found) == 1 else None


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


def add_note(patient: Patient, author: User, title: str, text: str, submission_id: str | None) -> tuple[VisitNote, bool]:
    """Store a visit note once per form submission; returns (note, created).

    A submission id belongs to its author and patient: reused anywhere else it is a conflict, and
    the note it names is never returned (it may be another patient's).
    """
    title, text = (title or "").strip(), (text or "").strip()
    if not title or not text:
        raise ApiError(400, "empty_note", "A note needs a title and some text.")
    if len(title) > NOTE_TITLE_MAX or len(text) > NOTE_TEXT_MAX:
        raise ApiError(400, "note_too_long", f"Titles hold {NOTE_TITLE_MAX} and notes {NOTE_TEXT_MAX} characters at most.")
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
        raise ApiError(409, "submission_reused", "That form submission id was already used for another note.")
    return note


def own_patient_id(user: User) -> str:
    """The chart linked to a patient's account; 403 with how to get it linked when there is none.

    Not a 404 for a patient: they are signed in and doing nothing wrong, their account just has no
    chart yet. Staff have no chart of their own here at all.
    """
    if not user.has_role("patient"):
        raise ApiError(404, "not_a_patient", "Only patients have a chart of their own in the portal.")
    if not user.patient_id:
        raise ApiError(403, "no_chart", not_linked_message(user))
    return user.patient_id


def not_linked_message(user: User) -> str:
    return ("Your account is not linked to a chart yet. Contact the clinic and quote your account "
            f"reference {account_reference(user)} so they can link it.")


def account_reference(user: User) -> str:
    """The short reference a person quotes to the clinic, as the administrator's pages show it."""
    return user.id[:8]


def checked_break_glass_reason(reason: str | None) -> str:
    reason = (reason or "").strip()
    if not REASON_MIN <= len(reason) <= REASON_MAX:
        raise ApiError(400, "bad_reason", f"Explain the emergency in {REASON_MIN} to {REASON_MAX} characters.")
    return reason


def open_break_glass(user: User, patient: Patient, reason: str, minutes: int) -> BreakGlass:
    """A grant for a reason already checked by ``checked_break_glass_reason``."""
    now = datetime.now(timezone.utc)
    grant = BreakGlass(user_id=user.id, patient_id=patient.id, reason=reason, started_at=now,
                       expires_at=now + timedelta(minutes=minutes))
    db_session.add(grant)
    db_session.commit()
    return grant
