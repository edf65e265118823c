"""Ids and MRNs of the demo seed (portal/seed.py), the one place tests take them from.

The demo patients' ids are the development provider's accounts' (portal/devidp/users.py), which the
seed gives their charts; tests/unit/portal/devidp/test_devidp.py pins their literal values."""
from __future__ import annotations

from portal.devidp.users import DEMO_USERS
from portal.seed import seeded_mrn

_DEMO_PATIENTS = {user.login: user for user in DEMO_USERS if user.patient_id}

ALICE: str = _DEMO_PATIENTS["alice"].patient_id  # Alice Moreau, RC-100001, on dr.chen's teams
BOB: str = _DEMO_PATIENTS["bob"].patient_id  # Bob Lindqvist, RC-100002
ALICE_MRN: str = _DEMO_PATIENTS["alice"].mrn
BOB_MRN: str = _DEMO_PATIENTS["bob"].mrn

__all__ = ["ALICE", "ALICE_MRN", "BOB", "BOB_MRN", "seeded_mrn"]  # seeded_mrn(n): the n-th seeded chart's MRN, from 0
