"""The database alone never reveals PHI: seeded names, MRNs, birth dates and notes are absent from raw storage."""
from pathlib import Path

import pytest
import sqlalchemy as sa

from audit import generate_signing_key_pem
from portal import create_app
from portal.config import Settings
from portal.crypto import generate_keyring_json
from portal.db import db_session
from portal.migrate import upgrade
from portal.models import LabResult, Patient, VisitNote
from portal.seed import seed_demo


@pytest.fixture
def seeded(database_url, tmp_path):
    keyring = generate_keyring_json()
    settings = Settings(secret_key="s" * 40, database_url=database_url, keyring=keyring,
                        audit_signing_key=generate_signing_key_pem().decode(), oidc_issuer="http://127.0.0.1:9/devidp",
                        oidc_client_id="c", oidc_client_secret="s")
    upgrade(database_url)
    app = create_app(settings)
    with app.app_context():
        seed_demo(settings.oidc_issuer, population=30)
        patients = db_session.scalars(sa.select(Patient)).all()
        # Whole names (with their space) and long values: short strings could occur by chance in base64 ciphertext.
        secrets = {p.mrn for p in patients} | {f"{p.given_name} {p.family_name}" for p in patients}
        secrets |= {p.birth_date.isoformat() for p in patients} | {p.email for p in patients}
        secrets |= {n.text for n in db_session.scalars(sa.select(VisitNote))}
        secrets |= {r.reference_range for r in db_session.scalars(sa.select(LabResult))}
        db_session.remove()
    engine = app.extensions["portal.engine"]
    yield engine, {s for s in secrets if s and len(s) >= 8}
    engine.dispose()


def raw_sqlite_bytes(engine: sa.Engine) -> bytes:
    with engine.connect() as conn:
        conn.execute(sa.text("PRAGMA wal_checkpoint(TRUNCATE)"))
    path = Path(engine.url.database)
    return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())


def raw_postgres_text(engine: sa.Engine) -> bytes:
    with engine.connect() as conn:
        tables = conn.execute(sa.text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars().all()
        dump = [str(row[0]) for table in tables for row in conn.execute(sa.text(f'SELECT t::text FROM "{table}" t'))]
    return "\n".join(dump).encode()


def test_no_seeded_phi_in_raw_storage(seeded):
    engine, secrets = seeded
    raw = raw_sqlite_bytes(engine) if engine.dialect.name == "sqlite" else raw_postgres_text(engine)
    assert len(raw) > 10_000
    leaked = sorted(s for s in secrets if s.encode() in raw)
    assert leaked == []
    assert b"v1:" in raw  # the envelopes are there instead
