"""The report as a PDF (reportlab): a header with the patient, period and verification facts, then the table."""
from __future__ import annotations

import io
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import LongTable, Paragraph, SimpleDocTemplate, Spacer, TableStyle

from portal.disclosures.service import DisclosureReport

COLUMNS = ("When (UTC)", "Who", "Role", "What", "Purpose or reason", "Audit entry")
COLUMN_WIDTHS = (34 * mm, 40 * mm, 26 * mm, 58 * mm, 94 * mm, 20 * mm)


def report_pdf(report: DisclosureReport) -> bytes:
    buffer = io.BytesIO()
    # The title is generic on purpose: PDF metadata travels further than the page does.
    document = SimpleDocTemplate(buffer, pagesize=landscape(A4), title="Accounting of disclosures",
                                 leftMargin=12 * mm, rightMargin=12 * mm, topMargin=12 * mm, bottomMargin=12 * mm)
    styles = getSampleStyleSheet()
    cell = ParagraphStyle("cell", parent=styles["BodyText"], fontSize=8, leading=10)
    document.build([*_header(report, styles), Spacer(1, 4 * mm), _table(report, cell)])
    return buffer.getvalue()


def _text(value: object, style: ParagraphStyle) -> Paragraph:
    """Paragraphs parse markup: every value is escaped, so a typed reason cannot inject any."""
    return Paragraph(escape(str(value)), style)


def _header(report: DisclosureReport, styles) -> list:
    facts = (
        ("Patient", f"{report.patient_name} (MRN {report.mrn})"),
        ("Period", f"{report.period.start.isoformat()} to {report.period.end.isoformat()} (whole days, UTC)"),
        ("Generated", report.generated_at.strftime("%Y-%m-%d %H:%M:%S UTC")),
        ("Accesses listed", str(report.count)),
        ("Proven against the audit log's signed checkpoint",
         f"{report.proof.tree_size} entries, root {report.root_text}, "
         + (f"cosigned by {', '.join(report.witnesses)}" if report.witnesses else "not yet cosigned by a witness")),
        ("Report digest (SHA-256 of the CSV)", report.digest),
    )
    return [_text("Accounting of disclosures", styles["Title"]),
            *(_text(f"{label}: {value}", styles["BodyText"]) for label, value in facts)]


def _table(report: DisclosureReport, style: ParagraphStyle) -> LongTable:
    rows = [[_text(name, style) for name in COLUMNS]]
    rows += [[_text(value, style) for value in (
        line.time.strftime("%Y-%m-%d %H:%M:%S"), line.who, line.role, line.what,
        ("Break-glass: " if line.break_glass else "") + line.purpose, line.seq)] for line in report.lines]
    if not report.lines:
        rows.append([_text("No one else accessed this chart in this period.", style), "", "", "", "", ""])
    table = LongTable(rows, colWidths=COLUMN_WIDTHS, repeatRows=1)
    table.setStyle(TableStyle([
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#f0f3f6")),
        ("GRID", (0, 0), (-1, -1), 0.25, colors.HexColor("#c9d2db")),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        *([("SPAN", (0, 1), (-1, 1))] if not report.lines else []),
    ]))
    return table
