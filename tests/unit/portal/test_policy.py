"""policy.can as a table: (role, relationship to the chart, action) -> allowed, with its reason."""
from datetime import date, datetime, timedelta, timezone

import pytest

from portal.actions import Action, family, is_break_glass
from portal.crypto import Keyring, install_keyring
from portal.db import Base, bind_engine, create_engine, db_session
from portal.models import (
    BreakGlass,
    CareTeam,
    CareTeamMember,
    CareTeamPatient,
    Conversation,
    ConversationMember,
    Patient,
    User,
)
from portal.policy import AppAccess, ChartRef, FhirRef, can
from portal.scopes import ScopeSet


@pytest.fixture
def world(tmp_path):
    install_keyring(Keyring.generate())
    engine = create_engine(f"sqlite:///{tmp_path / 'policy.db'}")
    Base.metadata.create_all(engine)
    bind_engine(engine)
    team, other_team = CareTeam(name="Family"), CareTeam(name="Cardiology")
    own = Patient(mrn="RC-1", given_name="Ada", family_name="Lovelace", birth_date=date(1980, 1, 1))
    stranger = Patient(mrn="RC-2", given_name="Alan", family_name="Turing", birth_date=date(1970, 1, 1))
    db_session.add_all([team, other_team, own, stranger])
    db_session.flush()
    users = {
        "patient": User(issuer="i", subject="p", roles="patient", patient_id=own.id),
        "clinician": User(issuer="i", subject="c", roles="clinician"),
        "compliance": User(issuer="i", subject="o", roles="compliance"),
        "compliance+patient": User(issuer="i", subject="op", roles="compliance,patient", patient_id=own.id),
        "admin": User(issuer="i", subject="a", roles="admin"),
        "none": User(issuer="i", subject="n", roles=""),
    }
    db_session.add_all(users.values())
    db_session.flush()
    db_session.add_all([CareTeamMember(team_id=team.id, user_id=users["clinician"].id),
                        CareTeamPatient(team_id=team.id, patient_id=own.id),
                        CareTeamPatient(team_id=other_team.id, patient_id=stranger.id)])
    db_session.commit()
    yield {"users": users, "own": own, "stranger": stranger, "team": team, "other_team": other_team}
    db_session.remove()
    engine.dispose()


# (role, chart: "own" = the patient's own / the clinician's care team, "stranger" = neither), action, allowed
CHART_TABLE = [
    ("patient", "own", "chart.read", True), ("patient", "own", "chart.export", True),
    ("patient", "own", "chart.access_log", True), ("patient", "own", "chart.write", False),
    ("patient", "stranger", "chart.read", False), ("patient", "stranger", "chart.export", False),
    ("clinician", "own", "chart.read", True), ("clinician", "own", "chart.write", True),
    ("clinician", "own", "chart.export", True), ("clinician", "own", "chart.access_log", False),
    ("clinician", "stranger", "chart.read", False), ("clinician", "stranger", "chart.write", False),
    ("compliance", "own", "chart.read", False), ("admin", "own", "chart.read", False),
    ("none", "own", "chart.read", False),
    ("patient", "own", "chart.disclosures", True), ("patient", "stranger", "chart.disclosures", False),
    ("clinician", "own", "chart.disclosures", False), ("clinician", "stranger", "chart.disclosures", False),
    ("compliance", "own", "chart.disclosures", True), ("compliance", "stranger", "chart.disclosures", True),
    ("compliance+patient", "own", "chart.disclosures", True),
    ("compliance+patient", "stranger", "chart.disclosures", True),
    ("admin", "own", "chart.disclosures", False), ("admin", "stranger", "chart.disclosures", False),
    ("none", "own", "chart.disclosures", False), ("none", "stranger", "chart.disclosures", False),
]


@pytest.mark.parametrize("role, chart, action, allowed", CHART_TABLE)
def test_chart_access_table(world, role, chart, action, allowed):
    decision = can(world["users"][role], action, ChartRef(world[chart].id))
    assert decision.allowed is allowed
    assert decision.reason


def test_patient_is_refused_another_chart_as_if_it_did_not_exist(world):
    decision = can(world["users"]["patient"], "chart.read", ChartRef(world["stranger"].id))
    assert decision.conceal and not decision.allowed


def test_unknown_chart_is_concealed_for_everyone(world):
    decision = can(world["users"]["clinician"], "chart.read", ChartRef("00000000-0000-4000-8000-00000000dead"))
    assert (decision.allowed, decision.conceal, decision.reason) == (False, True, "no such patient")


def test_clinician_outside_the_team_is_told_why(world):
    decision = can(world["users"]["clinician"], "chart.read", ChartRef(world["stranger"].id))
    assert decision.reason == "not on the patient's care team" and not decision.conceal


# (role, chart) -> (reason, conceal) of the accounting of disclosures
DISCLOSURES_TABLE = [
    ("patient", "own", "own chart", False), ("compliance+patient", "own", "own chart", False),
    ("compliance", "own", "compliance review", False), ("compliance+patient", "stranger", "compliance review", False),
    ("clinician", "own", "requires the compliance role", False),
    ("admin", "own", "requires the compliance role", False),
    ("patient", "stranger", "not the patient's own chart", True), ("none", "own", "not the patient's own chart", True),
]


@pytest.mark.parametrize("role, chart, reason, conceal", DISCLOSURES_TABLE)
def test_disclosures_go_to_the_patient_and_compliance(world, role, chart, reason, conceal):
    decision = can(world["users"][role], "chart.disclosures", ChartRef(world[chart].id, "disclosures"))
    assert (decision.reason, decision.conceal) == (reason, conceal)


def test_disclosures_of_an_unknown_patient_are_concealed(world):
    decision = can(world["users"]["compliance"], "chart.disclosures", ChartRef("00000000-0000-4000-8000-00000000dead"))
    assert (decision.allowed, decision.conceal, decision.reason) == (False, True, "no such patient")


def test_break_glass_opens_a_chart_until_it_expires(world):
    clinician, stranger = world["users"]["clinician"], world["stranger"]
    now = datetime.now(timezone.utc)
    grant = BreakGlass(user_id=clinician.id, patient_id=stranger.id, reason="unconscious in ED",
                       started_at=now, expires_at=now + timedelta(minutes=30))
    db_session.add(grant)
    db_session.commit()
    decision = can(clinician, "chart.read", ChartRef(stranger.id))
    assert decision.allowed and decision.break_glass_id == grant.id and decision.reason == "break-glass access"
    grant.expires_at = now - timedelta(seconds=1)
    db_session.commit()
    assert not can(clinician, "chart.read", ChartRef(stranger.id)).allowed


ROLE_TABLE = [
    ("clinician", "patient.search", True), ("patient", "patient.search", False), ("compliance", "patient.search", False),
    ("clinician", "break_glass.open", True), ("patient", "break_glass.open", False),
    ("compliance", "audit.search", True), ("compliance", "audit.export", True), ("clinician", "audit.search", False),
    ("admin", "audit.search", False), ("admin", "admin.teams", True), ("compliance", "admin.teams", False),
]


@pytest.mark.parametrize("role, action, allowed", ROLE_TABLE)
def test_role_actions(world, role, action, allowed):
    assert can(world["users"][role], action).allowed is allowed


def test_an_unregistered_action_is_an_error_not_a_silent_refusal(world):
    with pytest.raises(ValueError, match="no.such.action"):
        can(world["users"]["clinician"], "no.such.action")


def test_recorded_events_are_never_decided(world):
    assert can(world["users"]["admin"], Action.SIGNIN_SUCCESS).reason == "signin.success is recorded, never decided"


def test_anonymous_is_refused_everything(world):
    assert can(None, "chart.read", ChartRef(world["own"].id)).reason == "not signed in"


def test_conversations_follow_membership(world):
    users = world["users"]
    direct = Conversation(kind="direct", direct_key="x")
    team_chat = Conversation(kind="team", team_id=world["team"].id)
    other_team_chat = Conversation(kind="team", team_id=world["other_team"].id)
    thread = Conversation(kind="patient", patient_id=world["own"].id)
    db_session.add_all([direct, team_chat, other_team_chat, thread])
    db_session.flush()
    db_session.add(ConversationMember(conversation_id=direct.id, user_id=users["clinician"].id))
    db_session.commit()
    assert can(users["clinician"], "conversation.send", direct).allowed
    assert not can(users["compliance"], "conversation.send", direct).allowed
    assert can(users["clinician"], "conversation.join", team_chat).allowed
    assert not can(users["clinician"], "conversation.join", other_team_chat).allowed
    assert can(users["patient"], "conversation.send", thread).allowed
    assert can(users["clinician"], "conversation.history", thread).allowed
    assert not can(users["admin"], "conversation.join", thread).allowed
    assert can(users["clinician"], "conversation.join", None).conceal


def test_leaving_the_care_team_removes_access(world):
    users = world["users"]
    thread = Conversation(kind="patient", patient_id=world["own"].id)
    db_session.add(thread)
    db_session.commit()
    assert can(users["clinician"], "conversation.join", thread).allowed
    db_session.delete(db_session.get(CareTeamMember, (world["team"].id, users["clinician"].id)))
    db_session.commit()
    assert not can(users["clinician"], "conversation.join", thread).allowed
    assert not can(users["clinician"], "chart.read", ChartRef(world["own"].id)).allowed


# --------------------------------------------------------------------------- apps a patient connected


def app_ref(world, chart: str, resource_type: str, scopes: str, *, token_for: str = "own",
            categories=(), section: str = "results") -> FhirRef:
    access = AppAccess(client_id="app-1", name="Diary", grant_id="g-1", patient_id=world[token_for].id,
                       scopes=ScopeSet.parse(scopes))
    return FhirRef(world[chart].id, section, app=access, resource_type=resource_type, categories=tuple(categories))


LAB = ("http://terminology.hl7.org/CodeSystem/observation-category", "laboratory")

# (person, chart asked for, token's chart, action, type, scopes, categories) -> (allowed, conceal)
APP_TABLE = [
    ("patient", "own", "own", "fhir.read", "Observation", "patient/*.rs", (LAB,), True, False),
    ("patient", "own", "own", "fhir.search", "Observation", "patient/Observation.s", (), True, False),
    ("patient", "own", "own", "fhir.read", "Observation", "patient/Observation.s", (LAB,), False, False),
    ("patient", "own", "own", "fhir.search", "Condition", "patient/Observation.rs", (), False, False),
    ("patient", "own", "own", "fhir.read", "Observation", f"patient/Observation.rs?category={LAB[0]}|laboratory", (LAB,),
     True, False),
    ("patient", "own", "own", "fhir.read", "Observation", "patient/Observation.rs?category=vital-signs", (LAB,),
     False, False),
    ("patient", "own", "own", "fhir.search", "Observation", "patient/Observation.rs?category=laboratory",
     ((None, "vital-signs"),), False, False),
    ("patient", "stranger", "own", "fhir.read", "Observation", "patient/*.rs", (), False, True),  # another chart
    ("patient", "stranger", "stranger", "fhir.read", "Observation", "patient/*.rs", (), False, True),  # not hers
    ("clinician", "own", "own", "fhir.read", "Observation", "patient/*.rs", (), False, True),  # a clinician's token
    ("patient", "own", "own", "chart.read", "Observation", "patient/*.rs", (), False, False),  # apps only read FHIR
]


@pytest.mark.parametrize("role, chart, token_for, action, resource_type, scopes, categories, allowed, conceal", APP_TABLE)
def test_an_app_reads_only_its_patients_chart_within_the_scopes_granted(world, role, chart, token_for, action,
                                                                          resource_type, scopes, categories, allowed,
                                                                          conceal):
    ref = app_ref(world, chart, resource_type, scopes, token_for=token_for, categories=categories)
    decision = can(world["users"][role], action, ref)
    assert (decision.allowed, decision.conceal) == (allowed, conceal), decision.reason


def test_the_portal_session_cannot_use_the_apps_actions(world):
    decision = can(world["users"]["patient"], Action.FHIR_READ, ChartRef(world["own"].id, "results"))
    assert not decision.allowed and "FHIR API" in decision.reason


@pytest.mark.parametrize("action", ["apps.list", "apps.revoke", "chart.access_log"])
def test_connected_apps_are_the_patients_own_business(world, action):
    assert can(world["users"]["patient"], action, ChartRef(world["own"].id, "connected_apps")).allowed
    assert not can(world["users"]["clinician"], action, ChartRef(world["own"].id, "connected_apps")).allowed


def test_an_action_family_no_registered_action_belongs_to_is_refused_at_import():
    assert family("chart.") == "chart."
    with pytest.raises(ValueError, match="chrat."):
        family("chrat.")


@pytest.mark.parametrize("action, details, expected", [
    ("break_glass.open", {}, True),
    ("chart.read", {"break_glass": "grant-1"}, True),
    ("chart.read", {}, False),
])
def test_an_access_is_break_glass_when_it_opens_or_uses_an_emergency_grant(action, details, expected):
    assert is_break_glass(action, details) is expected
