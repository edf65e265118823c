"""Ids of the demo seed (portal/seed.py): the one place tests take them from."""
from __future__ import annotations

ALICE = "00000000-0000-4000-8000-000000000001"  # Alice Moreau, RC-100001: the demo patient "alice", dr.chen's team
BOB = "00000000-0000-4000-8000-000000000002"  # Bob Lindqvist, RC-100002: the demo patient "bob"
