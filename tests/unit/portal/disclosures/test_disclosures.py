"""The accounting of disclosures without a server: the period, line wording, CSV and digest, and PDF.

The proof gate (each line's entry proven in the signed tree) is specified in tests/unit/audit/test_audit_report.py and,
through the portal, in tests/integration/portal/disclosures/test_disclosures.py."""
import csv
import hashlib
import io
from datetime import date, datetime, timezone

import pytest

from audit.export import csv_cell
from audit.report import ReportProof
from portal.disclosures.pdf import report_pdf
from portal.disclosures.service import (
    CSV_HEADER,
    DateRange,
    DisclosureLine,
    DisclosureReport,
    describe_access,
    describe_role,
    parse_range,
)
from portal.exceptions import DateRangeError

TODAY = date(2026, 3, 14)


def test_the_default_period_is_the_last_six_years_up_to_today():
    assert parse_range("", None, today=TODAY) == DateRange(date(2020, 3, 14), TODAY)
    assert parse_range(None, "2024-02-29", today=TODAY) == DateRange(date(2018, 2, 28), date(2024, 2, 29))
    assert parse_range(" 2026-01-01 ", "", today=TODAY) == DateRange(date(2026, 1, 1), TODAY)


def test_a_period_covers_whole_utc_days_inclusive():
    period = parse_range("2026-03-01", "2026-03-01", today=TODAY)
    assert period.since == datetime(2026, 3, 1, tzinfo=timezone.utc)
    assert period.until == datetime(2026, 3, 2, tzinfo=timezone.utc)
    assert period.describe() == "2026-03-01..2026-03-01"


@pytest.mark.parametrize("start, end, message", [
    ("2026-03-02", "2026-03-01", "must not be after the end date"),
    ("01/03/2026", "", "start date must be a date written YYYY-MM-DD"),
    ("", "2026-02-30", "end date must be a date written YYYY-MM-DD"),
    ("", "2026-03-15", "must not be in the future"),
    ("1899-12-31", "", "must not be before 1900-01-01"),
    ("", "9999-12-31", "must not be in the future"),
])
def test_bad_periods_are_refused_with_a_message(start, end, message):
    with pytest.raises(DateRangeError, match=message):
        parse_range(start, end, today=TODAY)


@pytest.mark.parametrize("action, resource_type, expected", [
    ("chart.read", "results", "Read chart — results"),
    ("chart.read", "chart", "Read chart — whole chart"),
    ("chart.write", "notes", "Wrote to chart — visit notes"),
    ("chart.export", "fhir_bundle", "Downloaded chart — FHIR record"),
    ("patient.search.hit", "search_result", "Search result"),
    ("break_glass.granted", "break_glass", "Break-glass access opened"),
    ("conversation.join", "conversation", "Opened the care message thread"),
    ("some.new_action", "thing", "Some new action"),
])
def test_each_access_is_described_in_words(action, resource_type, expected):
    assert describe_access(action, resource_type) == expected


def test_roles_read_as_words():
    assert describe_role("u1", "clinician") == "Clinician"
    assert describe_role("u1", "clinician,patient") == "Clinician, Patient"
    assert (describe_role("u1", None), describe_role(None, None)) == ("Staff", "System")


def test_spreadsheet_formulas_are_neutralised():
    assert csv_cell("=HYPERLINK(\"x\")") == "'=HYPERLINK(\"x\")"
    assert csv_cell("-1") == "'-1" and csv_cell("@SUM(A1)") == "'@SUM(A1)"
    assert csv_cell("Dr. Ana Reyes") == "Dr. Ana Reyes"


def _report(*purposes: str) -> DisclosureReport:
    moment = datetime(2026, 3, 1, 9, 30, 5, 123456, tzinfo=timezone.utc)
    lines = tuple(DisclosureLine(seq, moment, "Dr. Ana Reyes", "Clinician", "Read chart — results", purpose, seq == 7)
                  for seq, purpose in enumerate(purposes, start=7))
    proof = ReportProof("checkpoint", "log+00000000+AA", (), (), 42, b"\xab" * 32)
    return DisclosureReport("p1", "Alice Moreau", "RC-1", DateRange(date(2026, 3, 1), date(2026, 3, 1)),
                            moment, proof, lines)


def test_the_digest_is_the_sha256_of_the_csv_download():
    report = _report("Unconscious in the emergency department", "care team member")
    rows = list(csv.reader(io.StringIO(report.csv)))
    assert tuple(rows[0]) == CSV_HEADER
    assert rows[1] == ["2026-03-01T09:30:05Z", "Dr. Ana Reyes", "Clinician", "Read chart — results",
                       "Unconscious in the emergency department", "yes", "7"]
    assert rows[2][-2:] == ["no", "8"]
    assert report.digest == hashlib.sha256(report.csv.encode("utf-8")).hexdigest()
    assert report.digest != _report("Unconscious in the emergency department", "care team members").digest
    assert report.to_json()["lines"][0] == {"seq": 7, "time": "2026-03-01T09:30:05Z", "who": "Dr. Ana Reyes",
                                            "role": "Clinician", "what": "Read chart — results",
                                            "purpose": "Unconscious in the emergency department", "break_glass": True}


def test_an_empty_report_still_has_a_header_and_a_digest():
    report = _report()
    assert report.csv == ",".join(CSV_HEADER) + "\r\n" and len(report.digest) == 64 and report.count == 0


def test_the_pdf_escapes_typed_text_and_has_the_table():
    pdf = report_pdf(_report("<font size=40>loud</font> & <b>unclosed", "care team member"))
    assert pdf.startswith(b"%PDF") and len(pdf) > 1000
    assert report_pdf(_report()).startswith(b"%PDF")
