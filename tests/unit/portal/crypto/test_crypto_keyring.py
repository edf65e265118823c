"""Keyring loading, validation, dev-keyring creation and the process-wide install."""
from __future__ import annotations

import base64
import json
import os
import stat

import pytest

import portal.crypto.keyring as keyring_module
from portal.crypto import (
    Keyring,
    KeyringError,
    KeyringNotInstalledError,
    active_keyring,
    generate_keyring_json,
    install_keyring,
    write_dev_keyring,
)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _doc(**overrides) -> dict:
    doc = {
        "primary": "k1",
        "keys": {"k1": _b64(b"a" * 32), "k0": _b64(b"b" * 32)},
        "index_primary": "i1",
        "index_keys": {"i1": _b64(b"c" * 32)},
    }
    doc.update(overrides)
    return doc


@pytest.fixture
def restore_active():
    previous = keyring_module._active
    yield
    keyring_module._active = previous


def test_load_from_json_text_and_from_file(tmp_path):
    text = json.dumps(_doc())
    path = tmp_path / "keys.json"
    path.write_text(text)
    for source in (text, "  \n" + text, str(path)):
        ring = Keyring.load(source)
        assert ring.primary == "k1" and ring.index_primary == "i1"
        assert ring.key("k1") == b"a" * 32 and ring.index_key("i1") == b"c" * 32
        assert set(ring.key_ids) == {"k1", "k0"}


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"primary": "k9"}, "'primary' must name a key"),
        ({"index_primary": "k1"}, "'index_primary' must name a key"),
        ({"keys": {}}, "non-empty"),
        ({"keys": {"k1": _b64(b"a" * 16)}}, "must decode to 32 bytes, got 16"),
        ({"keys": {"k1": "not base64!!"}}, "not valid base64"),
        ({"keys": {"k1": 42}}, "must be a base64 string"),
        ({"keys": {"bad:id": _b64(b"a" * 32)}, "primary": "bad:id"}, "invalid key id"),
        ({"index_keys": {"i1": _b64(b"a" * 32)}}, "index keys must differ"),
        ({"keys": {"k1": _b64(b"a" * 32), "k2": _b64(b"a" * 32)}}, "same key under two ids"),
        ({"extra": 1}, "unknown fields: extra"),
    ],
)
def test_validation_errors_are_clear_and_never_include_key_material(overrides, message):
    doc = _doc(**overrides)
    with pytest.raises(KeyringError, match=message) as excinfo:
        Keyring.load(json.dumps(doc))
    for secret in (_b64(b"a" * 32), _b64(b"a" * 16), _b64(b"c" * 32)):
        assert secret not in str(excinfo.value)


def test_missing_fields_and_bad_json_and_missing_file(tmp_path):
    doc = _doc()
    del doc["index_keys"]
    with pytest.raises(KeyringError, match="missing fields: index_keys"):
        Keyring.load(json.dumps(doc))
    with pytest.raises(KeyringError, match="not valid JSON"):
        Keyring.load('{"primary": ')
    with pytest.raises(KeyringError, match="not found"):
        Keyring.load(str(tmp_path / "absent.json"))


def test_repr_hides_key_material():
    ring = Keyring.load(json.dumps(_doc()))
    assert _b64(b"a" * 32) not in repr(ring) and "k1" in repr(ring)


def test_generate_and_rotated_round_trip_through_json():
    ring = Keyring.load(generate_keyring_json())
    newer = ring.rotated()
    assert newer.primary not in ring.key_ids and newer.index_primary not in ring.index_key_ids
    assert set(ring.key_ids) < set(newer.key_ids)
    again = Keyring.load(newer.to_json())
    assert again.key(ring.primary) == ring.key(ring.primary)
    assert again.index_key(newer.index_primary) == newer.index_key(newer.index_primary)


def test_write_dev_keyring_is_private_and_never_overwrites(tmp_path):
    path = tmp_path / "instance" / "keyring.json"
    assert write_dev_keyring(path) is True
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    first = path.read_text()
    Keyring.load(str(path))
    assert write_dev_keyring(path) is False
    assert path.read_text() == first


def test_active_keyring_before_install_fails_clearly(restore_active):
    keyring_module._active = None
    with pytest.raises(KeyringNotInstalledError, match="install_keyring"):
        active_keyring()
    ring = Keyring.generate()
    install_keyring(ring)
    assert active_keyring() is ring
    with pytest.raises(TypeError):
        install_keyring(generate_keyring_json())
