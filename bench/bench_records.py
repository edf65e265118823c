"""Chart reads per second with field decryption, against the same endpoint on plaintext columns.

Not a test: prints ratios measured in one run (machines here are noisy, so absolute numbers mean
little). Both sides go through the same Flask app, the same serializer and the same query shape;
the baseline's tables simply hold the plaintext. Usage: python bench/bench_records.py [--seconds 3]
"""
from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit import generate_signing_key_pem  # noqa: E402
from portal import create_app  # noqa: E402
from portal.config import Settings  # noqa: E402
from portal.crypto import generate_keyring_json  # noqa: E402
from portal.db import db_session  # noqa: E402
from portal.migrate import upgrade  # noqa: E402
from portal.models import LoginSession, Patient, User  # noqa: E402
from portal.records import serialize  # noqa: E402
from portal.seed import seed_demo  # noqa: E402


class PlainBase(DeclarativeBase):
    pass


def _plain(name: str, columns: dict) -> type:
    attrs = {"__tablename__": f"plain_{name}", "id": mapped_column(sa.String(36), primary_key=True),
             "patient_id": mapped_column(sa.ForeignKey("plain_patient.id"), index=True), **columns}
    return type(f"Plain{name.title()}", (PlainBase,), {**attrs, "__annotations__": {"id": Mapped[str]}})


class PlainPatient(PlainBase):
    __tablename__ = "plain_patient"
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    mrn: Mapped[str] = mapped_column(sa.Text)
    given_name: Mapped[str] = mapped_column(sa.Text)
    family_name: Mapped[str] = mapped_column(sa.Text)
    birth_date: Mapped[sa.Date] = mapped_column(sa.Date)
    sex: Mapped[str | None] = mapped_column(sa.Text)
    phone: Mapped[str | None] = mapped_column(sa.Text)
    email: Mapped[str | None] = mapped_column(sa.Text)
    address: Mapped[str | None] = mapped_column(sa.Text)


SECTIONS = {
    "conditions": ("condition", {"text": sa.Text, "status": sa.Text, "onset": sa.Date}),
    "medications": ("medication", {"text": sa.Text, "dosage": sa.Text, "status": sa.Text}),
    "allergies": ("allergy", {"substance": sa.Text, "reaction": sa.Text, "severity": sa.Text}),
    "results": ("lab_result", {"name": sa.Text, "value": sa.Text, "unit": sa.Text, "reference_range": sa.Text,
                               "flag": sa.Text, "observed_at": sa.DateTime(timezone=True)}),
    "notes": ("visit_note", {"title": sa.Text, "text": sa.Text, "author_id": sa.Text,
                             "created_at": sa.DateTime(timezone=True)}),
}
PLAIN = {key: _plain(table, {c: mapped_column(t, nullable=True) for c, t in cols.items()})
         for key, (table, cols) in SECTIONS.items()}
for key, model in PLAIN.items():
    setattr(PlainPatient, key, relationship(model))
PLAIN["results"].abnormal = property(lambda r: r.flag in {"H", "L", "HH", "LL", "A"})
PLAIN["notes"].author = None


def copy_to_plaintext(engine: sa.Engine) -> None:
    PlainBase.metadata.create_all(engine)
    with engine.begin() as conn:
        for patient in db_session.scalars(sa.select(Patient)):
            conn.execute(PlainPatient.__table__.insert(), {c: getattr(patient, c) for c in PlainPatient.__table__.c.keys()})
            for key, model in PLAIN.items():
                rows = [{c: getattr(item, c, None) for c in model.__table__.c.keys()} for item in getattr(patient, key)]
                if rows:
                    conn.execute(model.__table__.insert(), rows)


def measure(client, path: str, seconds: float) -> tuple[float, float]:
    latencies, deadline = [], time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        response = client.get(path)
        latencies.append(time.perf_counter() - started)
        assert response.status_code == 200, (path, response.status_code)
    return len(latencies) / sum(latencies), statistics.median(latencies) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--patients", type=int, default=60)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    settings = Settings(secret_key="b" * 40, database_url=f"sqlite:///{tmp / 'bench.db'}",
                        keyring=generate_keyring_json(), audit_signing_key=generate_signing_key_pem().decode(),
                        oidc_issuer="http://127.0.0.1:9/devidp", oidc_client_id="c", oidc_client_secret="s",
                        env="test")
    upgrade(settings.database_url)
    app = create_app(settings)
    app.config["WTF_CSRF_ENABLED"] = False

    @app.get("/bench/plain/<patient_id>")
    def plain_chart(patient_id):  # the baseline: same serializer, plaintext tables, no audit
        return serialize.chart(db_session.get(PlainPatient, patient_id))

    @app.get("/bench/encrypted/<patient_id>")
    def encrypted_chart(patient_id):  # the same work on the encrypted tables, no audit
        return serialize.chart(db_session.get(Patient, patient_id))

    with app.app_context():
        seed_demo(settings.oidc_issuer, population=args.patients)
        copy_to_plaintext(app.extensions["portal.engine"])
        patient_id = "00000000-0000-4000-8000-000000000001"
        chen = db_session.scalars(sa.select(User).where(User.subject == "demo-chen")).one()
        token = "bench-session-token"
        db_session.add(LoginSession(token_hash=hashlib.sha256(token.encode()).hexdigest(), user_id=chen.id))
        db_session.commit()
        db_session.remove()
    client = app.test_client()
    with client.session_transaction() as session:
        session["sid"], session["_user_id"] = token, chen.id
    print(f"chart reads, {args.seconds:.0f} s each, SQLite, in-process test client")
    plain = measure(client, f"/bench/plain/{patient_id}", args.seconds)
    encrypted = measure(client, f"/bench/encrypted/{patient_id}", args.seconds)
    api = measure(client, f"/api/v1/patients/{patient_id}", args.seconds)
    page = measure(client, f"/patients/{patient_id}", args.seconds)
    print(f"  plaintext columns            {plain[0]:8.1f} reads/s  p50 {plain[1]:6.2f} ms  (baseline)")
    print(f"  encrypted columns            {encrypted[0]:8.1f} reads/s  p50 {encrypted[1]:6.2f} ms  "
          f"ratio {encrypted[0] / plain[0]:.2f}")
    print(f"  API /api/v1/patients/<id>    {api[0]:8.1f} reads/s  p50 {api[1]:6.2f} ms  "
          f"ratio {api[0] / plain[0]:.2f} (adds session, policy, audit append)")
    print(f"  chart page /patients/<id>    {page[0]:8.1f} reads/s  p50 {page[1]:6.2f} ms  "
          f"ratio {page[0] / plain[0]:.2f} (adds templates)")


if __name__ == "__main__":
    main()
