"""Envelope format and failure modes, blind-index terms and normalisers, the column type."""
from __future__ import annotations

import base64
import datetime

import pytest

from portal.crypto import (
    DecryptionError,
    Encrypted,
    EncryptionError,
    Keyring,
    Sealed,
    normalise_date,
    normalise_identifier,
    normalise_text,
)
from portal.crypto.blind_index import compute_term
from portal.crypto.envelope import open_envelope, seal

TABLE, COLUMN, ROW = "patient", "ssn", "row-1"


@pytest.fixture
def ring() -> Keyring:
    return Keyring.generate()


def _open(ring: Keyring, envelope: str, table=TABLE, column=COLUMN, row=ROW) -> bytes:
    return open_envelope(ring, envelope, table, column, row)


def test_round_trip_format_and_fresh_nonces(ring):
    first = seal(ring, b"123-45-6789", TABLE, COLUMN, ROW)
    second = seal(ring, b"123-45-6789", TABLE, COLUMN, ROW)
    assert first != second
    version, key_id, nonce, body = first.split(":")
    assert (version, key_id) == ("v1", "k1")
    assert len(base64.urlsafe_b64decode(nonce + "==")) == 12
    assert "=" not in first and b"123" not in first.encode()
    assert _open(ring, first) == _open(ring, second) == b"123-45-6789"


@pytest.mark.parametrize("where", [dict(table="other"), dict(column="dob"), dict(row="row-2")])
def test_associated_data_binds_table_column_and_row(ring, where):
    envelope = seal(ring, b"secret value", TABLE, COLUMN, ROW)
    with pytest.raises(DecryptionError) as excinfo:
        _open(ring, envelope, **where)
    err = excinfo.value
    message = str(err)
    assert f"{err.table}.{err.column}" in message and str(err.row_id) in message
    assert "secret value" not in message


def _edits(envelope: str) -> list[str]:
    version, key_id, nonce, body = envelope.split(":")
    flipped = body[:5] + ("A" if body[5] != "A" else "B") + body[6:]
    return [
        envelope[:-4],  # truncated tag
        f"{version}:{key_id}:{nonce}:{flipped}",  # edited ciphertext
        f"{version}:{key_id}:{nonce[:-2]}:{body}",  # short nonce
        f"v2:{key_id}:{nonce}:{body}",  # unknown version
        f"{version}:{key_id}:{nonce}",  # missing field
        f"{envelope}:extra",  # extra field
        f"{version}:{key_id}:{nonce}:{body[:-1]}*",  # foreign character
        f"{version}:{key_id}:{nonce}:",  # empty ciphertext
        "plaintext",
    ]


def test_truncated_or_edited_envelopes_fail(ring):
    envelope = seal(ring, b"value", TABLE, COLUMN, ROW)
    for edited in _edits(envelope):
        with pytest.raises(DecryptionError, match=f"{TABLE}.{COLUMN} for row {ROW}"):
            _open(ring, edited)


def test_non_canonical_base64_is_rejected(ring):
    envelope = seal(ring, b"x", TABLE, COLUMN, ROW)  # 17 bytes: last char carries unused bits
    version, key_id, nonce, body = envelope.split(":")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = body[:-1] + alphabet[alphabet.index(body[-1]) ^ 1]
    assert base64.urlsafe_b64decode(twin + "==") == base64.urlsafe_b64decode(body + "==")
    with pytest.raises(DecryptionError, match="non-canonical"):
        _open(ring, f"{version}:{key_id}:{nonce}:{twin}")


def test_unknown_key_id_fails(ring):
    envelope = seal(ring.rotated(), b"value", TABLE, COLUMN, ROW)
    with pytest.raises(DecryptionError, match="unknown key id 'k2'"):
        _open(ring, envelope)


def test_old_keys_still_open_after_rotation(ring):
    envelope = seal(ring, b"value", TABLE, COLUMN, ROW)
    assert _open(ring.rotated(), envelope) == b"value"


def test_normalisers():
    assert normalise_text("  o'brien ") == normalise_text("O'Brien") == "o'brien"
    assert normalise_text("O\u2019Brien") == "o'brien"
    assert normalise_text("Zoë  \t Ångström") == "zoe angstrom"
    assert normalise_text("STRASSE") == normalise_text("straße")
    assert normalise_identifier(" mrn-00 12\u20133 ") == "MRN00123"
    assert normalise_date(datetime.date(1980, 2, 3)) == normalise_date(" 1980-02-03") == "1980-02-03"
    with pytest.raises(TypeError):
        normalise_date(datetime.datetime(1980, 2, 3, 4, 5))


def test_blind_index_terms_are_keyed_and_domain_separated(ring):
    term = compute_term(ring, "i1", "patient.mrn_bidx", "MRN001")
    assert term.startswith("i1:") and len(term) == 3 + 32
    assert term == compute_term(ring, "i1", "patient.mrn_bidx", "MRN001")
    assert term != compute_term(ring, "i1", "patient.name_bidx", "MRN001")
    assert term != compute_term(Keyring.generate(), "i1", "patient.mrn_bidx", "MRN001")


def test_column_type_refuses_unsealed_values():
    column_type = Encrypted(str)
    assert column_type.process_bind_param(None, None) is None
    assert column_type.process_bind_param(Sealed("v1:k1:a:b"), None) == "v1:k1:a:b"
    with pytest.raises(EncryptionError, match="unsealed"):
        column_type.process_bind_param("123-45-6789", None)
    with pytest.raises(TypeError):
        Encrypted(int)


def test_column_type_serialises_only_its_python_type():
    dates = Encrypted(datetime.date)
    assert dates.deserialise(dates.serialise(datetime.date(2001, 9, 11))) == datetime.date(2001, 9, 11)
    with pytest.raises(EncryptionError):
        dates.serialise(datetime.datetime(2001, 9, 11, 8, 46))
    with pytest.raises(EncryptionError):
        Encrypted(str).serialise(b"bytes")
