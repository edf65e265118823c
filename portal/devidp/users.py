"""The demo accounts of the development provider.

They are a fixed, published list on purpose: every developer, demo and end-to-end test signs in as
the same people, and the sign-in form shows their passwords because nothing here is secret.
The subjects are stable so the portal's records (care teams, audit entries) keep pointing at
the same person across restarts.
"""
from __future__ import annotations

import hmac
from dataclasses import dataclass


@dataclass(frozen=True)
class DemoUser:
    """One person who can sign in at the development provider."""

    login: str
    password: str
    subject: str
    name: str
    email: str
    roles: tuple[str, ...]
    # A patient's chart: its portal id (fixed, so the seeded chart keeps it) and its MRN, which the
    # provider's patient claim carries, as a clinic's provider would.
    patient_id: str | None = None
    mrn: str | None = None


DEMO_USERS: tuple[DemoUser, ...] = (
    DemoUser("alice", "alice-demo", "demo-alice", "Alice Moreau", "alice@example.test", ("patient",),
             "00000000-0000-4000-8000-000000000001", "RC-100001"),
    DemoUser("bob", "bob-demo", "demo-bob", "Bob Lindqvist", "bob@example.test", ("patient",),
             "00000000-0000-4000-8000-000000000002", "RC-100002"),
    DemoUser("dr.chen", "chen-demo", "demo-chen", "Dr. Mei Chen", "mei.chen@example.test", ("clinician",)),
    DemoUser("dr.okafor", "okafor-demo", "demo-okafor", "Dr. Tunde Okafor", "tunde.okafor@example.test",
             ("clinician",)),
    # Not on Alice's care team: the account used to demonstrate break-glass access.
    DemoUser("dr.reyes", "reyes-demo", "demo-reyes", "Dr. Ana Reyes", "ana.reyes@example.test", ("clinician",)),
    DemoUser("cora", "cora-demo", "demo-cora", "Cora Whitfield", "cora@example.test", ("compliance",)),
    DemoUser("adam", "adam-demo", "demo-adam", "Adam Novak", "adam@example.test", ("admin",)),
    # No portal role at all: signing in as Nora shows the portal's "no access" page.
    DemoUser("nora", "nora-demo", "demo-nora", "Nora Quill", "nora@example.test", ()),
)


def user_by_subject(subject: str) -> DemoUser | None:
    """Tokens and codes store only the subject, so this turns it back into the person."""
    return next((user for user in DEMO_USERS if user.subject == subject), None)


def authenticate(login: str, password: str) -> DemoUser | None:
    """Check a login and password; every account is compared so timing does not reveal logins."""
    found = None
    for user in DEMO_USERS:
        same_login = hmac.compare_digest(user.login.encode(), login.encode())
        same_password = hmac.compare_digest(user.password.encode(), password.encode())
        if same_login and same_password:
            found = user
    return found
