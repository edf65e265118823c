"""Patient search for people (pages, the JSON API and the compliance officer's MRN lookup): audited, and
bounded per user to a number of distinct patients an hour counted from the audit log itself."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from flask_login import current_user

from audit import AuditFilter
from portal import services
from portal.access import authorize, record, record_each
from portal.actions import Action, Section
from portal.db import serialised
from portal.exceptions import SearchLimitReached
from portal.models import Patient
from portal.records import service

SEARCH_RATE_LIMIT = "60 per minute"  # a search lists other people's names: no bulk harvesting


def listed_by_search(mrn: str, name: str, birth_date: str) -> list[Patient]:
    """Search for the signed-in user: the attempt is audited first, then ``listed_within_limit``."""
    authorize(Action.PATIENT_SEARCH)
    return listed_within_limit(mrn, name, birth_date)


def listed_within_limit(mrn: str = "", name: str = "", birth_date: str = "") -> list[Patient]:
    """The patients found, within the user's hourly limit of distinct patients listed; going past the limit
    is audited as a denied search. A search shows names and birth dates: each patient listed sees it in
    their access log."""
    # One search at a time per user, on every worker: the limit is counted from the hits already audited.
    with serialised(f"patient-search:{current_user.id}"):
        try:
            results = service.search_within_limit(mrn, name, birth_date, _listed_this_hour,
                                                  services.settings().search_distinct_patients_per_hour)
        except SearchLimitReached as exc:
            record(Action.PATIENT_SEARCH, "denied", reason="hourly search limit reached", details=exc.audit_details())
            exc.audited = True
            raise
        record(Action.PATIENT_SEARCH_RESULTS, "allowed", reason="search returned", details={"count": len(results)})
        record_each(Action.PATIENT_SEARCH_HIT, "allowed", [p.id for p in results],
                    reason="listed in search results", resource_type=Section.SEARCH_RESULT)
    return results


def _listed_this_hour() -> set[str]:
    since = datetime.now(timezone.utc) - timedelta(hours=1)
    return services.audit_store().distinct_patient_ids(
        AuditFilter(since=since, actor_id=current_user.id, action=Action.PATIENT_SEARCH_HIT))
