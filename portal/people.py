"""Who people are, for showing them: display names by user id, and a patient's own accounts."""
from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

from portal.db import db_session
from portal.models import User


def display_names(user_ids: Iterable[str | None]) -> dict[str, str]:
    """Display names (decrypted by the ORM) of the given user ids; unknown ids are left out."""
    ids = {user_id for user_id in user_ids if user_id}
    if not ids:
        return {}
    users = db_session.scalars(sa.select(User).where(User.id.in_(ids))).all()
    return {user.id: user.display_name or user.subject for user in users}


def accounts_of_patient(patient_id: str) -> list[str]:
    """The user ids linked to a patient's chart: their own reads are not disclosures."""
    return list(db_session.scalars(sa.select(User.id).where(User.patient_id == patient_id)))
