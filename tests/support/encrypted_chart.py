"""A chart-like table of encrypted values with blind indexes, on a declarative base of its own, and the fresh
keyring it is written under: what the tests of ``portal.crypto`` on real databases share
(tests/integration/portal/crypto/test_crypto_orm.py, tests/integration/portal/crypto/test_crypto_rotation.py)."""
from __future__ import annotations

import datetime
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import portal.crypto.keyring as keyring_module
from portal.crypto import (
    Encrypted,
    Keyring,
    blind_index_column,
    install_keyring,
    normalise_identifier,
    normalise_text,
    register_encryption,
)

TABLE = "crypto_test_chart"


class Base(DeclarativeBase):
    pass


register_encryption(Base)


class Chart(Base):
    """Encrypted text and a date, a deferred encrypted note, a plain column, and two blind indexes."""

    __tablename__ = TABLE

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    name: Mapped[str | None] = mapped_column(Encrypted(str))
    mrn: Mapped[str | None] = mapped_column(Encrypted(str))
    dob: Mapped[datetime.date | None] = mapped_column(Encrypted(datetime.date))
    note: Mapped[str | None] = mapped_column(Encrypted(str), deferred=True)
    clinic: Mapped[str | None] = mapped_column(sa.String(50))
    name_bidx: Mapped[str | None] = blind_index_column("name", normalise_text)
    mrn_bidx: Mapped[str | None] = blind_index_column("mrn", normalise_identifier)


@contextmanager
def installed_keyring() -> Iterator[Keyring]:
    """A newly generated keyring, installed for the block; the one before it comes back afterwards."""
    previous = keyring_module._active
    ring = Keyring.generate()
    install_keyring(ring)
    try:
        yield ring
    finally:
        keyring_module._active = previous


@contextmanager
def chart_database(database_url: str, **connect_args: object) -> Iterator[sa.Engine]:
    """An engine on ``database_url`` with the chart table created."""
    engine = sa.create_engine(database_url, connect_args=connect_args)
    Base.metadata.create_all(engine)
    try:
        yield engine
    finally:
        engine.dispose()
