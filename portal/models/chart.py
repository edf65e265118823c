"""The patient's chart. Every value that identifies or describes the patient is encrypted at rest."""
from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.crypto import Encrypted, blind_index_column, normalise_date, normalise_identifier, normalise_text
from portal.db import Base
from portal.models.columns import id_column, patient_fk, timestamp_column


class Patient(Base):
    __tablename__ = "patient"

    id: Mapped[str] = id_column()
    mrn: Mapped[str] = mapped_column(Encrypted(str))
    mrn_bidx: Mapped[str | None] = blind_index_column("mrn", normalise_identifier)
    given_name: Mapped[str] = mapped_column(Encrypted(str))
    family_name: Mapped[str] = mapped_column(Encrypted(str))
    family_name_bidx: Mapped[str | None] = blind_index_column("family_name", normalise_text)
    birth_date: Mapped[date] = mapped_column(Encrypted(date))
    birth_date_bidx: Mapped[str | None] = blind_index_column("birth_date", normalise_date)
    sex: Mapped[str | None] = mapped_column(Encrypted(str))
    phone: Mapped[str | None] = mapped_column(Encrypted(str))
    email: Mapped[str | None] = mapped_column(Encrypted(str))
    address: Mapped[str | None] = mapped_column(Encrypted(str))
    created_at: Mapped[datetime] = timestamp_column()

    conditions: Mapped[list[Condition]] = relationship(back_populates="patient", order_by="Condition.recorded_at.desc()")
    medications: Mapped[list[Medication]] = relationship(back_populates="patient", order_by="Medication.recorded_at.desc()")
    allergies: Mapped[list[Allergy]] = relationship(back_populates="patient", order_by="Allergy.recorded_at.desc()")
    results: Mapped[list[LabResult]] = relationship(back_populates="patient", order_by="LabResult.observed_at.desc()")
    notes: Mapped[list[VisitNote]] = relationship(back_populates="patient", order_by="VisitNote.created_at.desc()")

    @property
    def display_name(self) -> str:
        return f"{self.given_name} {self.family_name}"


class Condition(Base):
    __tablename__ = "condition"

    id: Mapped[str] = id_column()
    patient_id: Mapped[str] = patient_fk()
    text: Mapped[str] = mapped_column(Encrypted(str))
    status: Mapped[str] = mapped_column(sa.String(20), default="active")
    onset: Mapped[date | None] = mapped_column(Encrypted(date))
    recorded_at: Mapped[datetime] = timestamp_column()

    patient: Mapped[Patient] = relationship(back_populates="conditions")


class Medication(Base):
    __tablename__ = "medication"

    id: Mapped[str] = id_column()
    patient_id: Mapped[str] = patient_fk()
    text: Mapped[str] = mapped_column(Encrypted(str))
    dosage: Mapped[str | None] = mapped_column(Encrypted(str))
    status: Mapped[str] = mapped_column(sa.String(20), default="active")
    recorded_at: Mapped[datetime] = timestamp_column()

    patient: Mapped[Patient] = relationship(back_populates="medications")


class Allergy(Base):
    __tablename__ = "allergy"

    id: Mapped[str] = id_column()
    patient_id: Mapped[str] = patient_fk()
    substance: Mapped[str] = mapped_column(Encrypted(str))
    reaction: Mapped[str | None] = mapped_column(Encrypted(str))
    severity: Mapped[str | None] = mapped_column(Encrypted(str))
    recorded_at: Mapped[datetime] = timestamp_column()

    patient: Mapped[Patient] = relationship(back_populates="allergies")


class LabResult(Base):
    __tablename__ = "lab_result"

    id: Mapped[str] = id_column()
    patient_id: Mapped[str] = patient_fk()
    name: Mapped[str] = mapped_column(Encrypted(str))
    value: Mapped[str] = mapped_column(Encrypted(str))
    unit: Mapped[str | None] = mapped_column(Encrypted(str))
    reference_range: Mapped[str | None] = mapped_column(Encrypted(str))
    flag: Mapped[str | None] = mapped_column(Encrypted(str))
    # The LOINC code of the test, when known: encrypted like the name it identifies.
    loinc_code: Mapped[str | None] = mapped_column(Encrypted(str))
    observed_at: Mapped[datetime] = timestamp_column(index=True)

    patient: Mapped[Patient] = relationship(back_populates="results")

    @property
    def abnormal(self) -> bool:
        return self.flag in {"H", "L", "HH", "LL", "A"}


class VisitNote(Base):
    __tablename__ = "visit_note"
    __table_args__ = (sa.UniqueConstraint("author_id", "submission_id", name="uq_visit_note_author_submission"),)

    id: Mapped[str] = id_column()
    patient_id: Mapped[str] = patient_fk()
    author_id: Mapped[str | None] = mapped_column(sa.ForeignKey("user_account.id", ondelete="SET NULL"))
    title: Mapped[str] = mapped_column(Encrypted(str))
    text: Mapped[str] = mapped_column(Encrypted(str))
    submission_id: Mapped[str | None] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = timestamp_column()

    patient: Mapped[Patient] = relationship(back_populates="notes")
    author = relationship("User")
