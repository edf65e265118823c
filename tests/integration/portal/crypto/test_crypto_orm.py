"""Encrypted columns through the ORM on real SQLite and PostgreSQL."""
from __future__ import annotations

import datetime
import json
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from portal.crypto import (
    DecryptionError,
    EncryptionError,
    Keyring,
    KeyringError,
    blind_index_terms,
    check_stored_values,
    install_keyring,
)
from tests.support.encrypted_chart import TABLE, Chart, chart_database, installed_keyring


@pytest.fixture
def keyring() -> Iterator[Keyring]:
    with installed_keyring() as ring:
        yield ring


@pytest.fixture
def engine(database_url: str, keyring: Keyring) -> Iterator[sa.Engine]:
    with chart_database(database_url) as engine:
        yield engine


@pytest.fixture
def sessions(engine: sa.Engine) -> sessionmaker[Session]:
    return sessionmaker(engine)


def _add(sessions, **values) -> str:
    with sessions.begin() as session:
        record = Chart(**values)
        session.add(record)
        session.flush()
        return record.id


def _raw(engine: sa.Engine, row_id: str) -> dict:
    with engine.connect() as conn:
        query = sa.text(f"SELECT * FROM {TABLE} WHERE id = :id")
        return dict(conn.execute(query, {"id": row_id}).mappings().one())


def _set_raw(engine: sa.Engine, row_id: str, **values) -> None:
    assignments = ", ".join(f"{name} = :{name}" for name in values)
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {TABLE} SET {assignments} WHERE id = :id"), {"id": row_id, **values})


def test_round_trip_of_str_and_date(sessions):
    dob = datetime.date(1971, 6, 28)
    with sessions.begin() as session:
        record = Chart(name="Siobhán O'Brien", mrn="MRN-0042", dob=dob, note="allergic to penicillin")
        session.add(record)
        session.flush()
        row_id = record.id
        assert len(row_id) == 36
        assert record.name == "Siobhán O'Brien" and record.dob == dob  # plaintext after flush
        assert record not in session.dirty
    with sessions() as session:
        loaded = session.get(Chart, row_id)
        assert (loaded.name, loaded.mrn, loaded.dob) == ("Siobhán O'Brien", "MRN-0042", dob)
        assert loaded.note == "allergic to penicillin"  # deferred column loads through refresh


def test_update_reseals_and_expiry_reloads_plaintext(sessions, engine):
    row_id = _add(sessions, name="Ann", mrn="A-1")
    before = _raw(engine, row_id)
    with sessions() as session:
        record = session.get(Chart, row_id)
        record.name = "Anne"
        record.clinic = "north"
        session.commit()  # expires the instance
        assert record.name == "Anne" and record.mrn == "A-1"
        record.mrn = "A-1"  # same value: nothing to rewrite
        session.commit()
    after = _raw(engine, row_id)
    assert after["name"] != before["name"] and after["name_bidx"] != before["name_bidx"]
    assert after["mrn"] == before["mrn"] and after["mrn_bidx"] == before["mrn_bidx"]


def test_none_stays_null(sessions, engine):
    row_id = _add(sessions, name="Bo", mrn=None)
    raw = _raw(engine, row_id)
    assert raw["mrn"] is None and raw["mrn_bidx"] is None and raw["dob"] is None
    with sessions.begin() as session:
        record = session.get(Chart, row_id)
        assert record.mrn is None
        record.name = None
    raw = _raw(engine, row_id)
    assert raw["name"] is None and raw["name_bidx"] is None


def test_raw_row_contains_no_plaintext(sessions, engine):
    row_id = _add(sessions, name="Zebedee Quixote", mrn="MRN-777-XYZ", dob=datetime.date(1999, 12, 31))
    raw = _raw(engine, row_id)
    dump = " ".join(str(value) for value in raw.values())
    # Whole values only: a three-letter fragment can turn up by chance in base64 ciphertext or a UUID.
    for needle in ("Zebedee Quixote", "zebedee quixote", "MRN-777-XYZ", "MRN777XYZ", "1999-12-31"):
        assert needle not in dump
    assert raw["name"].startswith("v1:k1:") and raw["dob"].startswith("v1:k1:")
    assert raw["name_bidx"].startswith("i1:") and len(raw["name_bidx"]) == 35


def _assert_decryption_fails(sessions, row_id: str, column: str) -> None:
    with sessions() as session, pytest.raises(DecryptionError) as excinfo:
        session.get(Chart, row_id)
    message = str(excinfo.value)
    assert f"{TABLE}.{column} for row {row_id}" in message
    assert "Alpha" not in message and "Beta" not in message


def test_ciphertext_swapped_between_rows_fails(sessions, engine):
    first = _add(sessions, name="Alpha")
    second = _add(sessions, name="Beta")
    _set_raw(engine, second, name=_raw(engine, first)["name"])
    _assert_decryption_fails(sessions, second, "name")


def test_ciphertext_swapped_between_columns_fails(sessions, engine):
    row_id = _add(sessions, name="Alpha", mrn="Beta")
    _set_raw(engine, row_id, mrn=_raw(engine, row_id)["name"])
    _assert_decryption_fails(sessions, row_id, "mrn")


@pytest.mark.parametrize(
    "edit",
    [
        lambda env: env[:-3],
        lambda env: env[:-1] + ("A" if env[-1] != "A" else "B"),
        lambda env: env.rsplit(":", 1)[0],
        lambda env: env.replace("v1:k1:", "v1:k7:"),
    ],
    ids=["truncated", "edited", "field-dropped", "unknown-key"],
)
def test_tampered_envelope_fails(sessions, engine, edit):
    row_id = _add(sessions, name="Alpha")
    _set_raw(engine, row_id, name=edit(_raw(engine, row_id)["name"]))
    _assert_decryption_fails(sessions, row_id, "name")


def test_unknown_key_id_fails(sessions, engine, keyring):
    row_id = _add(sessions, name="Alpha")
    install_keyring(Keyring.generate().rotated().rotated())  # k1..k3, but a different k1
    with sessions() as session, pytest.raises(DecryptionError, match="authentication failed"):
        session.get(Chart, row_id)
    install_keyring(Keyring("k9", {"k9": b"z" * 32}, "i1", {"i1": b"y" * 32}))
    with sessions() as session, pytest.raises(DecryptionError, match="unknown key id 'k1'"):
        session.get(Chart, row_id)


def test_plaintext_never_reaches_the_database_outside_the_orm_path(sessions, engine):
    with engine.begin() as conn, pytest.raises(sa.exc.StatementError) as excinfo:
        conn.execute(sa.insert(Chart).values(id="x", name="Plain Text"))
    assert isinstance(excinfo.value.orig, EncryptionError)
    with sessions() as session, pytest.raises(sa.exc.StatementError):
        session.execute(sa.select(Chart).where(Chart.name == "Plain Text")).all()
    _add(sessions, name="Alpha")
    with sessions() as session, pytest.raises(EncryptionError, match="envelope was assigned"):
        envelope = session.execute(sa.select(Chart.name)).scalar_one()  # a column query is not opened
        session.add(Chart(name=envelope))
        session.flush()
    with sessions() as session:
        assert session.execute(sa.select(sa.func.count()).select_from(Chart)).scalar_one() == 1


def test_wrong_python_type_is_refused(sessions):
    with sessions() as session, pytest.raises(EncryptionError, match="Encrypted\\(date\\) got a str"):
        session.add(Chart(dob="1980-01-01"))
        session.flush()


def test_blind_index_search_finds_exact_normalised_matches(sessions):
    obrien = _add(sessions, name="O'Brien", mrn="AB-1234-5")
    _add(sessions, name="O'Brian", mrn="AB-1234-6")
    _add(sessions, name="Obrien", mrn="AB12346")
    brien_jr = _add(sessions, name="O'Brien Jr", mrn=None)

    def search(attr: str, value: str) -> list[str]:
        terms = blind_index_terms(Chart, attr, value)
        column = getattr(Chart, f"{attr}_bidx")
        with sessions() as session:
            return list(session.scalars(sa.select(Chart.id).where(column.in_(terms))))

    assert search("name", "  o'brien ") == [obrien]
    assert search("name", "O\u2019BRIEN") == [obrien]
    assert search("name", "o'brien  jr") == [brien_jr]
    assert search("mrn", "ab 1234 5") == [obrien]
    assert search("mrn", "AB12345") == [obrien]
    assert search("mrn", "AB-1234") == []
    assert blind_index_terms(Chart, "mrn", None) == []


def test_blind_index_search_spans_index_key_rotation(sessions, keyring):
    row_id = _add(sessions, mrn="Q-1")
    install_keyring(keyring.rotated())
    new_id = _add(sessions, mrn="q1")
    terms = blind_index_terms(Chart, "mrn", "Q1")
    assert [t.split(":")[0] for t in terms] == ["i2", "i1"]
    with sessions() as session:
        found = set(session.scalars(sa.select(Chart.id).where(Chart.mrn_bidx.in_(terms))))
    assert found == {row_id, new_id}


def test_the_keyring_probe_opens_stored_values_and_refuses_other_keys(engine, keyring):
    """What /readyz asks: does this keyring open what the database holds (and make its search terms)?"""
    assert check_stored_values(engine, [Chart]) == 0  # nothing stored yet: nothing to disagree with
    with Session(engine) as session:
        session.add(Chart(id="r-1", name="Moreau", mrn="RC-100001", clinic="north"))
        session.commit()
    assert check_stored_values(engine, [Chart]) == 2
    with pytest.raises(DecryptionError) as wrong:
        check_stored_values(engine, [Chart], Keyring.generate())
    assert (wrong.value.table, wrong.value.row_id) == (TABLE, "r-1") and "Moreau" not in str(wrong.value)
    other_index_key = json.loads(keyring.to_json())
    other_index_key["index_keys"] = json.loads(Keyring.generate().to_json())["index_keys"]
    with pytest.raises(KeyringError, match=f"{TABLE}.(name|mrn)_bidx for row r-1"):
        check_stored_values(engine, [Chart], Keyring.from_dict(other_index_key))
