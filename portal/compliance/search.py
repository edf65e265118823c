"""Searching the audit log page by page, newest first, and one entry in detail."""
from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from audit import AuditFilter, Entry, TreeError
from portal import services
from portal.compliance.events import EventRow, event_rows
from portal.compliance.flags import BreakGlassFlag, break_glass_grant, grant_flag

PAGE_SIZE = 50


@dataclass(frozen=True)
class SearchPage:
    rows: list[EventRow]
    total: int
    next_before: int | None

    @property
    def count(self) -> int:
        return len(self.rows)


def search(filter: AuditFilter, before: int | None = None, page_size: int = PAGE_SIZE) -> SearchPage:
    """One page of matching entries, newest first; ``before`` is the seq cursor of the next page."""
    page = services.audit_store().page(filter, before, page_size)
    return SearchPage(event_rows(page.entries), page.total, page.next_before)


def search_details(filter: AuditFilter, page: SearchPage | None = None, before: int | None = None) -> dict:
    """What the audit.search event records about a search (identifiers and counts only)."""
    details: dict[str, Any] = {"filter": filter.describe()[:256]}
    if before is not None:
        details["before"] = before
    if page is not None:
        details.update(count=page.count, total=page.total)
    return details


def head_seq() -> int:
    return services.audit_store().head_seq()


@dataclass(frozen=True)
class EventDetail:
    row: EventRow
    leaf_hash: str  # base64, as proofs and exports spell it
    leaf_ok: bool  # the Merkle tree's stored leaf is this entry's
    break_glass: BreakGlassFlag | None


def event_detail(seq: int) -> EventDetail | None:
    entry = services.audit_store().entry(seq)
    if entry is None:
        return None
    grant_id = entry.event.details.get("break_glass")
    grant = break_glass_grant(str(grant_id)) if grant_id else None
    leaf = entry.leaf_hash()
    return EventDetail(event_rows([entry])[0], base64.b64encode(leaf).decode("ascii"), _in_tree(entry, leaf),
                       grant_flag(grant) if grant is not None else None)


def _in_tree(entry: Entry, leaf: bytes) -> bool:
    try:
        return services.audit_store().leaf_hash(entry.seq - 1) == leaf
    except (ValueError, TreeError):  # beyond the tree, or its leaf is missing
        return False
