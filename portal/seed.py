"""A realistic synthetic population for demos and benchmarks (`flask --app portal seed-demo`).

Deterministic (fixed random seed) and idempotent: running it twice changes nothing. The demo users
are the development provider's accounts, pre-created so care teams exist before their first sign-in.
"""
from __future__ import annotations

import random
from datetime import date, datetime, timedelta, timezone

import sqlalchemy as sa

from portal.db import db_session
from portal.devidp.users import DEMO_USERS
from portal.models import (
    Allergy,
    CareTeam,
    CareTeamMember,
    CareTeamPatient,
    Condition,
    LabResult,
    Medication,
    Patient,
    User,
    VisitNote,
)

POPULATION = 240
TEAMS = ("Family Medicine", "Cardiology", "Endocrinology", "Respiratory")
CLINICIAN_TEAMS = {"dr.chen": ("Family Medicine", "Cardiology"), "dr.okafor": ("Family Medicine",),
                   "dr.reyes": ("Endocrinology", "Respiratory")}
GIVEN = ("Olivia", "Liam", "Emma", "Noah", "Ava", "Elijah", "Sofia", "Mateo", "Amara", "Kenji", "Priya", "Lucas",
         "Chloé", "Hannah", "Yusuf", "Ingrid", "Tomás", "Aiko", "Fatima", "Oskar", "Zoe", "Rafael", "Leila", "Ivan")
FAMILY = ("García", "Smith", "Nguyen", "O'Brien", "Kowalski", "Haddad", "Johansson", "Okoro", "Rossi", "Müller",
          "Tanaka", "Patel", "Dubois", "Silva", "Novak", "Andersen", "Cohen", "Mensah", "Ivanova", "Brown")
CONDITIONS = ("Type 2 diabetes mellitus", "Essential hypertension", "Asthma", "Hyperlipidaemia", "Hypothyroidism",
              "Chronic kidney disease stage 3", "Atrial fibrillation", "Osteoarthritis of knee", "Migraine",
              "Gastro-oesophageal reflux disease", "Major depressive disorder", "COPD")
MEDICATIONS = (("Metformin 500 mg tablet", "1 tablet twice daily with meals"), ("Lisinopril 10 mg tablet", "1 daily"),
               ("Salbutamol 100 mcg inhaler", "2 puffs as needed"), ("Atorvastatin 20 mg tablet", "1 at night"),
               ("Levothyroxine 50 mcg tablet", "1 each morning"), ("Apixaban 5 mg tablet", "1 twice daily"),
               ("Omeprazole 20 mg capsule", "1 daily before breakfast"), ("Sertraline 50 mg tablet", "1 daily"))
ALLERGIES = (("Penicillin", "Hives", "moderate"), ("Peanuts", "Anaphylaxis", "severe"), ("Latex", "Rash", "mild"),
             ("Sulfonamides", "Fever and rash", "moderate"), ("Shellfish", "Swelling of lips", "severe"))
LABS = (("Haemoglobin A1c", "%", 4.0, 5.6, 4.8, 9.5), ("LDL cholesterol", "mmol/L", 0.0, 3.0, 1.5, 5.2),
        ("Creatinine", "µmol/L", 60, 110, 55, 180), ("Potassium", "mmol/L", 3.5, 5.1, 3.1, 5.8),
        ("TSH", "mU/L", 0.4, 4.0, 0.2, 8.0), ("Haemoglobin", "g/L", 120, 170, 95, 175))
# LOINC codes of the seeded tests (the units are those the clinic reports in).
LOINC_CODES = {"Haemoglobin A1c": "4548-4", "LDL cholesterol": "22748-8", "Creatinine": "14682-9",
               "Potassium": "2823-3", "TSH": "3016-3", "Haemoglobin": "718-7"}
NOTE_TITLES = ("Annual review", "Follow-up visit", "Medication review", "Telephone consultation")
NOTE_TEXTS = ("Patient reports feeling well. Reviewed results and medication; no changes. Follow up in 6 months.",
              "Discussed blood pressure readings at home. Encouraged salt reduction and regular walking.",
              "Symptoms improved since last visit. Continue current plan and repeat bloods in 3 months.",
              "Reviewed inhaler technique. Patient to keep a symptom diary and return if worse.")


def seed_demo(issuer: str, population: int = POPULATION) -> dict[str, int]:
    """Create demo users, care teams and the synthetic population when absent; return counts."""
    rng = random.Random(20261127)
    teams = {name: _get_or_create_team(name) for name in TEAMS}
    users = {u.login: _get_or_create_user(issuer, u) for u in DEMO_USERS}
    for login, team_names in CLINICIAN_TEAMS.items():
        for name in team_names:
            _ensure(CareTeamMember, team_id=teams[name].id, user_id=users[login].id)
    demo_patients = [u for u in DEMO_USERS if u.patient_id]
    if db_session.get(Patient, demo_patients[0].patient_id) is None:
        now = datetime.now(timezone.utc)
        for number in range(max(population, 2)):
            demo = demo_patients[number] if number < len(demo_patients) else None
            patient = _make_patient(rng, number, demo, now)
            team = "Family Medicine" if demo else TEAMS[number % len(TEAMS)]
            db_session.add(CareTeamPatient(team_id=teams[team].id, patient_id=patient.id))
            if number % 50 == 49:
                db_session.commit()
    for demo in demo_patients:
        users[demo.login].patient_id = demo.patient_id
    _give_results_their_loinc_codes()
    db_session.commit()
    return {"patients": db_session.scalar(sa.select(sa.func.count()).select_from(Patient)),
            "users": len(users), "teams": len(teams)}


def seeded_mrn(number: int) -> str:
    """The medical record number the seed gives its ``number``-th patient (from 0): RC-100001, RC-100002..."""
    return f"RC-{100001 + number}"


def _make_patient(rng: random.Random, number: int, demo, now: datetime) -> Patient:
    given, family = (demo.name.split(" ", 1) if demo else (rng.choice(GIVEN), rng.choice(FAMILY)))
    born = date(1940, 1, 1) + timedelta(days=rng.randrange(0, 365 * 65))
    patient = Patient(
        id=demo.patient_id if demo else None, mrn=demo.mrn if demo else seeded_mrn(number),
        given_name=given, family_name=family, birth_date=born, sex=rng.choice(("female", "male")),
        phone=f"+1 555 01{number:04d}", email=f"{given.lower()}.{number}@example.org",
        address=f"{rng.randrange(1, 400)} River Road, Springfield",
    )
    db_session.add(patient)
    db_session.flush()
    for order, text in enumerate(rng.sample(CONDITIONS, rng.randrange(1, 4))):
        db_session.add(Condition(patient_id=patient.id, text=text, recorded_at=now - timedelta(minutes=order),
                                 onset=born + timedelta(days=rng.randrange(6000, 20000))))
    for order, (text, dosage) in enumerate(rng.sample(MEDICATIONS, rng.randrange(1, 4))):
        db_session.add(Medication(patient_id=patient.id, text=text, dosage=dosage, recorded_at=now - timedelta(minutes=order)))
    for order, (substance, reaction, severity) in enumerate(rng.sample(ALLERGIES, rng.randrange(0, 2))):
        db_session.add(Allergy(patient_id=patient.id, substance=substance, reaction=reaction, severity=severity,
                               recorded_at=now - timedelta(minutes=order)))
    for days_ago in (7, 90, 200):
        for order, (name, unit, low, high, minimum, maximum) in enumerate(rng.sample(LABS, 3)):
            value = round(rng.uniform(minimum, maximum), 1)
            flag = "H" if value > high else "L" if value < low else "N"
            # Minutes apart, so two results of one day never tie and every database lists them alike.
            observed_at = now - timedelta(days=days_ago + rng.randrange(0, 5), minutes=order)
            db_session.add(LabResult(patient_id=patient.id, name=name, value=str(value), unit=unit,
                                     reference_range=f"{low}–{high} {unit}", flag=flag, observed_at=observed_at,
                                     loinc_code=LOINC_CODES[name]))
    for index in range(rng.randrange(1, 3)):
        db_session.add(VisitNote(patient_id=patient.id, title=rng.choice(NOTE_TITLES), text=rng.choice(NOTE_TEXTS),
                                 created_at=now - timedelta(days=30 * (index + 1))))
    return patient


def _give_results_their_loinc_codes() -> None:
    """Results seeded before lab results carried LOINC codes get the code of their test."""
    for result in db_session.scalars(sa.select(LabResult).where(LabResult.loinc_code.is_(None))):
        if result.name in LOINC_CODES:
            result.loinc_code = LOINC_CODES[result.name]


def _get_or_create_team(name: str) -> CareTeam:
    team = db_session.scalars(sa.select(CareTeam).where(CareTeam.name == name)).first()
    if team is None:
        team = CareTeam(name=name)
        db_session.add(team)
        db_session.flush()
    return team


def _get_or_create_user(issuer: str, demo) -> User:
    user = db_session.scalars(sa.select(User).where(User.issuer == issuer, User.subject == demo.subject)).first()
    if user is None:
        user = User(issuer=issuer, subject=demo.subject, display_name=demo.name, email=demo.email,
                    roles=",".join(demo.roles))
        db_session.add(user)
        db_session.flush()
    return user


def _ensure(model, **key) -> None:
    if db_session.get(model, tuple(key.values())) is None:
        db_session.add(model(**key))
