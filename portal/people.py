"""Who people are: display names, a patient's own accounts and chart, and finding a chart by MRN."""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import sqlalchemy as sa

from portal.crypto import blind_index_terms
from portal.db import db_session
from portal.exceptions import Forbidden, NotFound
from portal.models import Patient, User
from portal.validation import checked_mrn


def display_names(user_ids: Iterable[str | None]) -> dict[str, str]:
    """Display names (decrypted by the ORM) of the given user ids; unknown ids are left out."""
    ids = {user_id for user_id in user_ids if user_id}
    if not ids:
        return {}
    users = db_session.scalars(sa.select(User).where(User.id.in_(ids))).all()
    return {user.id: user.display_name or user.subject for user in users}


def app_reader(details: Mapping[str, object]) -> str | None:
    """The app an audited access was made through (the name it was registered with), or None for a person's own."""
    name = details.get("app")
    return str(name) if name and details.get("client_id") else None


def own_patient_id(user: User) -> str:
    """The chart linked to a patient's account; Forbidden with how to get it linked when there is none.

    Not "not found" for a patient: they are signed in and doing nothing wrong, their account just has
    no chart yet. Staff have no chart of their own here at all.
    """
    if not user.has_role("patient"):
        raise NotFound("not_a_patient", "Only patients have a chart of their own in the portal.")
    if not user.patient_id:
        raise Forbidden("no_chart", not_linked_message(user))
    return user.patient_id


def not_linked_message(user: User) -> str:
    return ("Your account is not linked to a chart yet. Contact the clinic and quote your account "
            f"reference {account_reference(user)} so they can link it.")


def account_reference(user: User) -> str:
    """The short reference a person quotes to the clinic, as the administrator's pages show it."""
    return user.id[:8]


def patient_by_mrn(mrn: str) -> Patient | None:
    """The one chart with this MRN, found through its blind index; None when no chart, or more than
    one, has it (an ambiguous MRN links nobody). A malformed MRN is refused (``checked_mrn``)."""
    terms = blind_index_terms(Patient, "mrn", checked_mrn(mrn))
    found = db_session.scalars(sa.select(Patient).where(Patient.mrn_bidx.in_(terms)).limit(2)).all()
    return found[0] if len(found) == 1 else None
