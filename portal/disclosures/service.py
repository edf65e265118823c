"""The accounting of disclosures of one chart (in the manner of HIPAA, 45 CFR 164.528), from the audit log.

A report lists every allowed audit entry about the patient over whole UTC days, by anyone but the
patient's own accounts, in the tree of the log's newest signed (and witnessed) checkpoint. It is
issued only once every listed entry is proven, by its inclusion proof, to be in that tree unchanged
(audit/report.py); the proofs travel with the JSON report, so anyone can check it offline with the
log's and the witness's public keys. Views run ``proven_log`` through
``portal.access.authorized`` (decide, work, audit with the line count), then ``report``: only that
step decrypts PHI (the patient's name and MRN, break-glass reasons), so the issue is audited first.
"""
from __future__ import annotations

import base64
import csv
import hashlib
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from functools import cached_property
from typing import Any

import sqlalchemy as sa

from audit import Entry, MalformedEntryError, SqlAuditStore, TreeCheckpoint, TreeCosignature, TreeError
from audit.note import Verifier
from audit.report import (
    CSV_COLUMNS,
    EntryNotProven,
    ReportProof,
    check_extends,
    csv_row_of_line,
    prove_entries,
    sign_report,
)
from portal import services, witnessing
from portal.actions import Action, Section
from portal.db import db_session
from portal.exceptions import DateRangeError, NotFound, UnverifiedLog
from portal.models import BreakGlass, Patient
from portal.people import app_reader, display_names
from portal.policy import OWN_ACCESS_REASONS

ACCOUNTING_YEARS = 6  # the accounting period a patient may ask for
EARLIEST = date(1900, 1, 1)
CSV_HEADER = CSV_COLUMNS  # `python -m audit verify-report --csv` checks each row against the report's lines
# Accesses to a part of the chart name that part: "Read chart — results".
SECTIONED_ACTIONS = frozenset({Action.CHART_READ, Action.CHART_WRITE, Action.CHART_EXPORT, Action.FHIR_READ,
                               Action.FHIR_SEARCH})


# --------------------------------------------------------------------------- the period


@dataclass(frozen=True)
class DateRange:
    """Whole days in UTC, both ends included."""

    start: date
    end: date

    @property
    def since(self) -> datetime:
        return datetime.combine(self.start, time.min, tzinfo=timezone.utc)

    @property
    def until(self) -> datetime:
        """The exclusive upper bound: midnight after the last day."""
        return datetime.combine(self.end + timedelta(days=1), time.min, tzinfo=timezone.utc)

    def describe(self) -> str:
        return f"{self.start.isoformat()}..{self.end.isoformat()}"


def default_start(end: date) -> date:
    """The same day ACCOUNTING_YEARS years earlier (28 February for 29 February)."""
    try:
        return end.replace(year=end.year - ACCOUNTING_YEARS)
    except ValueError:
        return end.replace(year=end.year - ACCOUNTING_YEARS, day=28)


def _parse_day(text: str, name: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise DateRangeError(f"The {name} date must be a date written YYYY-MM-DD.") from None


def parse_range(start_text: str | None, end_text: str | None, today: date | None = None) -> DateRange:
    """The period asked for; a blank end is today (UTC) and a blank start ACCOUNTING_YEARS before the end."""
    today = today or datetime.now(timezone.utc).date()
    start_text, end_text = (start_text or "").strip(), (end_text or "").strip()
    end = _parse_day(end_text, "end") if end_text else today
    start = _parse_day(start_text, "start") if start_text else default_start(end)
    if end > today:
        raise DateRangeError("The end date must not be in the future (dates are in UTC).")
    if start < EARLIEST:
        raise DateRangeError(f"The start date must not be before {EARLIEST.isoformat()}.")
    if start > end:
        raise DateRangeError("The start date must not be after the end date.")
    return DateRange(start, end)


# --------------------------------------------------------------------------- lines


def describe_access(action: str, resource_type: str | None) -> str:
    """What was done, in words: e.g. "Read chart — results", "Search result"."""
    known = Action.find(action)
    label = known.label if known else action.replace("_", " ").replace(".", " ").capitalize()
    if known in SECTIONED_ACTIONS and resource_type:
        section = Section.find(resource_type)
        return f"{label} — {section.report_label if section else resource_type.replace('_', ' ')}"
    return label


def describe_role(actor_id: str | None, actor_role: str | None) -> str:
    if actor_role:
        return actor_role.replace(",", ", ").title()
    return "Staff" if actor_id else "System"


@dataclass(frozen=True)
class DisclosureLine:
    seq: int
    time: datetime
    who: str
    role: str
    what: str
    purpose: str
    break_glass: bool

    @property
    def time_text(self) -> str:
        return self.time.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    def csv_row(self) -> list[str]:
        return csv_row_of_line(self.to_json())

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "time": self.time_text, "who": self.who, "role": self.role, "what": self.what,
                "purpose": self.purpose, "break_glass": self.break_glass}


def csv_text(lines: Iterable[DisclosureLine]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_HEADER)
    writer.writerows(line.csv_row() for line in lines)
    return buffer.getvalue()


# --------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class ProvenLog:
    """The report's audit entries (identifiers only), each proven to be in one signed tree checkpoint."""

    patient_id: str
    period: DateRange
    entries: tuple[Entry, ...]
    proof: ReportProof

    @property
    def count(self) -> int:
        return len(self.entries)


@dataclass(frozen=True)
class DisclosureReport:
    patient_id: str
    patient_name: str
    mrn: str
    period: DateRange
    generated_at: datetime
    proof: ReportProof
    lines: tuple[DisclosureLine, ...]

    @cached_property
    def csv(self) -> str:
        return csv_text(self.lines)

    @property
    def count(self) -> int:
        return len(self.lines)

    @cached_property
    def digest(self) -> str:
        """SHA-256 of the CSV download: `sha256sum` of that file matches the digest printed on the page and PDF."""
        return hashlib.sha256(self.csv.encode("utf-8")).hexdigest()

    @property
    def root_text(self) -> str:
        return base64.b64encode(self.proof.root_hash).decode("ascii")

    @property
    def witnesses(self) -> list[str]:
        """The names of the witnesses that cosigned the checkpoint the lines are proven against."""
        return [key.split("+")[0] for key in self.proof.witness_keys]

    @property
    def filename_stem(self) -> str:
        return f"disclosures-{self.patient_id}-{self.period.start.isoformat()}-{self.period.end.isoformat()}"

    def to_json(self) -> dict[str, Any]:
        """The report with its proof: what `python -m audit verify-report` checks offline."""
        return {
            "patient": {"id": self.patient_id, "name": self.patient_name, "mrn": self.mrn},
            "start": self.period.start.isoformat(), "end": self.period.end.isoformat(),
            "generated_at": self.generated_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "count": self.count, "digest": self.digest,
            "lines": [line.to_json() for line in self.lines],
            "proof": self.proof.to_json(),
        }


def signed_json(report: DisclosureReport) -> dict[str, Any]:
    """The report as JSON, signed by the log's key so its lines' words are bound to it (audit.report)."""
    return sign_report(report.to_json(), services.audit_store().tree_signer())


def proven_log(patient_id: str, period: DateRange) -> ProvenLog:
    """The report's entries in the tree of the newest checkpoint, each with its checked inclusion proof.

    The checkpoint is taken first (signed now if the log has grown since the newest one, and cosigned by
    the witness when one is configured and answers), then the patient's entries up to its size are read,
    so the report is exactly the patient's disclosures in the tree it names. The log must still hold the
    checkpoint it signed at every multiple of PORTAL_AUDIT_CHECKPOINT_EVERY, and the tree must extend the
    last of them (so deleted checkpoints, or entries rewritten under them, stop the report). Cost:
    O(lines x log n), plus one small integer per multiple.
    """
    store = services.audit_store()
    checkpoint, witnesses = _newest_checkpoint(store)
    try:
        entries = tuple(_disclosed_entries(patient_id, period, checkpoint.tree_size))
    except MalformedEntryError as exc:
        raise UnverifiedLog("malformed", exc.position, exc.message) from None
    log = store.tree_signer().verifier
    anchor = checkpoint.tree_size // store.checkpoint_every * store.checkpoint_every
    missing = store.first_missing_checkpoint(anchor)
    if missing is not None:
        raise UnverifiedLog("checkpoint_missing", missing, f"checkpoint missing at seq {missing}")
    try:
        anchored = store.tree_checkpoint_of_size(anchor) if anchor else None
        check_extends(store, anchored.note if anchored else None, anchor, checkpoint.note, log)
        proof = prove_entries(store, entries, checkpoint.note, log, witnesses)
    except EntryNotProven as exc:
        raise UnverifiedLog("not_in_tree", exc.seq, str(exc)) from None
    except (TreeError, ValueError) as exc:  # a stored checkpoint that does not verify, or a tree missing hashes
        raise UnverifiedLog("checkpoint", checkpoint.tree_size, str(exc)) from None
    return ProvenLog(patient_id, period, entries, proof)


def _newest_checkpoint(store: SqlAuditStore) -> tuple[TreeCheckpoint | TreeCosignature, list[Verifier]]:
    """The checkpoint of the whole log as it is now, with the witnesses that cosigned it.

    With a witness the newest checkpoint is submitted at once and, once cosigned, is the report's (entries
    appended meanwhile are read no further than its size). A witness that has refused the log (smaller
    than, or inconsistent with, what it cosigned) stops every report until it cosigns again, even while it
    then stops answering. One that does not answer does not stop reports: they are issued against the
    log's own signature and say they are not witnessed (the log is local; a report must not wait on it).
    """
    witness = witnessing.submitter()
    if witness is not None:
        outcome = witness.submit(sign_now=True) if not witness.failures else None  # failing: rounds back off
        if witness.refusal is not None:
            raise UnverifiedLog("witness_refused", store.tree_size(), witness.refusal.error or "the witness refused")
        cosigned = store.latest_cosignature(witness.witness.key())
        if outcome is not None and outcome.cosigned is not None and cosigned is not None \
                and cosigned.tree_size >= outcome.cosigned:
            return cosigned, [witness.witness]
    newest = store.latest_tree_checkpoint()
    if newest is None or newest.tree_size < store.tree_size():
        newest = store.sign_tree_checkpoint()
    return newest, []


def _disclosed_entries(patient_id: str, period: DateRange, through: int) -> list[Entry]:
    """Every allowed access by anyone but the patient, or by an app the patient connected: the same rule as
    "Who viewed my chart", any action."""
    return services.audit_store().accesses_to(patient_id, not_reasons=OWN_ACCESS_REASONS, since=period.since,
                                              until=period.until, through=through)


def report(verified: ProvenLog) -> DisclosureReport:
    """The report of a proven log: only now are the patient's name and the break-glass reasons decrypted."""
    patient = db_session.get(Patient, verified.patient_id)
    if patient is None:
        raise NotFound("not_found", "There is no such record.")
    events = [entry.event for entry in verified.entries]
    names = display_names(event.actor_id for event in events)
    grants = _grants(str(event.details["break_glass"]) for event in events if event.details.get("break_glass"))
    return DisclosureReport(
        patient_id=patient.id, patient_name=patient.display_name, mrn=patient.mrn, period=verified.period,
        generated_at=datetime.now(timezone.utc), proof=verified.proof,
        lines=tuple(_line(entry, names, grants) for entry in verified.entries),
    )


def _grants(grant_ids: Iterable[str]) -> dict[str, BreakGlass]:
    ids = set(grant_ids)
    if not ids:
        return {}
    return {grant.id: grant for grant in db_session.scalars(sa.select(BreakGlass).where(BreakGlass.id.in_(ids)))}


def _line(entry: Entry, names: Mapping[str, str], grants: Mapping[str, BreakGlass]) -> DisclosureLine:
    event = entry.event
    grant = grants.get(str(event.details.get("break_glass") or ""))
    # The grant's own holder acted under it; a compliance review of the grant names it too, but is no emergency.
    break_glass = grant is not None and grant.user_id == event.actor_id
    app = app_reader(event.details)
    person = names.get(event.actor_id, "Clinic staff") if event.actor_id else "System"
    return DisclosureLine(
        seq=entry.seq,
        time=event.time,
        who=app or person,
        role=f"App connected by {person}" if app else describe_role(event.actor_id, event.actor_role),
        what=describe_access(event.action, event.resource_type),
        purpose=grant.reason if break_glass else (event.reason or ""),
        break_glass=break_glass,
    )
