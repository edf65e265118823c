"""Ids of the demo seed (portal/seed.py), the one place tests take them from.

The demo patients' ids are the development provider's accounts' (portal/devidp/users.py), which the
seed gives their charts; tests/unit/portal/devidp/test_devidp.py pins their literal values."""
from __future__ import annotations

from portal.devidp.users import DEMO_USERS

_PATIENT_IDS = {user.login: user.patient_id for user in DEMO_USERS if user.patient_id}

ALICE: str = _PATIENT_IDS["alice"]  # Alice Moreau, RC-100001, on dr.chen's teams
BOB: str = _PATIENT_IDS["bob"]  # Bob Lindqvist, RC-100002
