"""ORM events that seal plaintext before a flush and restore it afterwards and on load.

Application code only sees plaintext attributes; the database only sees
envelopes. Flow for one instance:

* ``before_insert`` / ``before_update``: assign a UUID primary key if missing,
  replace each changed Encrypted attribute with a :class:`Sealed` envelope bound
  to ``table.column.row_id``, and recompute blind indexes from the plaintext.
* ``after_insert`` / ``after_update``: put the plaintext back as the committed
  value, so the instance is not dirty and shows no ciphertext.
* ``load`` / ``refresh`` / ``refresh_flush``: open envelopes read from the database.

Limitation: if a flush fails before ``after_insert`` / ``after_update`` runs, the
instance keeps the envelopes in its attributes until it is flushed again or
expired; a retried flush re-seals the original plaintext.
"""
from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import event
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.state import InstanceState

from .blind_index import compute_term
from .column import Sealed
from .envelope import open_envelope, seal
from .errors import EncryptionError
from .keyring import Keyring, active_keyring
from .registry import BlindIndex, EncryptedField, ModelSpec, add_base, model_spec

_STASH = "portal_crypto_sealed"  # state.info key: {attr: (envelope, plaintext)}


def new_id() -> str:
    """A random UUID4 string, the primary key type of models with Encrypted columns."""
    return str(uuid.uuid4())


def register_encryption(base: type) -> None:
    """Attach the sealing/opening events to every model under a declarative ``base``.

    Call once, right after defining the base (calling again is a no-op).
    """
    if not add_base(base):
        return
    event.listen(base, "before_insert", _before_insert, propagate=True)
    event.listen(base, "before_update", _before_update, propagate=True)
    event.listen(base, "after_insert", _after_write, propagate=True)
    event.listen(base, "after_update", _after_write, propagate=True)
    event.listen(base, "load", _on_load, propagate=True)
    event.listen(base, "refresh", _on_refresh, propagate=True)
    event.listen(base, "refresh_flush", _on_refresh, propagate=True)


def term_for(keyring: Keyring, index: BlindIndex, plaintext: Any) -> str | None:
    """Blind-index term under the primary index key, or None for a None plaintext."""
    if plaintext is None:
        return None
    return compute_term(keyring, keyring.index_primary, index.domain, index.normaliser(plaintext))


def _before_insert(mapper, connection, target) -> None:
    spec = model_spec(mapper.class_)
    if not spec.fields:
        return
    if getattr(target, spec.pk_key) is None:
        setattr(target, spec.pk_key, new_id())
    state = sa_inspect(target)
    plain = {f.key: _plaintext(state, spec, f, state.dict.get(f.key)) for f in spec.fields}
    _seal_fields(state, spec, plain)


def _before_update(mapper, connection, target) -> None:
    spec = model_spec(mapper.class_)
    if not spec.fields:
        return
    state = sa_inspect(target)
    if state.attrs[spec.pk_key].history.has_changes():
        raise EncryptionError(f"{spec.table_name}: the primary key of a row with encrypted columns cannot change")
    plain = {}
    for field in spec.fields:
        history = state.attrs[field.key].history
        if history.added and not (history.deleted and history.deleted[0] == history.added[0]):
            plain[field.key] = _plaintext(state, spec, field, history.added[0])
    _seal_fields(state, spec, plain)


def _seal_fields(state: InstanceState, spec: ModelSpec, plain: dict[str, Any]) -> None:
    """Replace the attributes in ``plain`` with envelopes and refresh their blind indexes."""
    keyring = active_keyring()
    row_id = state.dict[spec.pk_key]
    stash = {}
    for field in spec.fields:
        if field.key not in plain or plain[field.key] is None:
            continue
        data = field.type.serialise(plain[field.key])
        envelope = Sealed(seal(keyring, data, spec.table_name, field.column, row_id))
        setattr(state.obj(), field.key, envelope)
        stash[field.key] = (envelope, plain[field.key])
    for index in spec.indexes:
        if index.source.key in plain:
            setattr(state.obj(), index.key, term_for(keyring, index, plain[index.source.key]))
    state.info[_STASH] = stash


def _plaintext(state: InstanceState, spec: ModelSpec, field: EncryptedField, value: Any) -> Any:
    """The value to seal; a Sealed value is accepted only if this instance sealed it itself."""
    if not isinstance(value, Sealed):
        return value
    envelope, plaintext = state.info.get(_STASH, {}).get(field.key, (None, None))
    if envelope is not value:
        raise EncryptionError(
            f"{spec.table_name}.{field.column}: an envelope was assigned to an Encrypted "
            "attribute; assign the plaintext instead"
        )
    return plaintext


def _after_write(mapper, connection, target) -> None:
    state = sa_inspect(target)
    stash = state.info.pop(_STASH, None)
    for key, (envelope, plaintext) in (stash or {}).items():
        if state.dict.get(key) is envelope:
            set_committed_value(target, key, plaintext)


def _on_load(target, context) -> None:
    _open_fields(target, None)


def _on_refresh(target, context, attrs) -> None:
    _open_fields(target, attrs)


def _open_fields(target, attrs) -> None:
    spec = model_spec(type(target))
    if not spec.fields:
        return
    state = sa_inspect(target)
    row_id = _row_id(state, spec)
    keyring = active_keyring()
    for field in spec.fields:
        value = state.dict.get(field.key)
        if (attrs is None or field.key in attrs) and isinstance(value, Sealed):
            data = open_envelope(keyring, value, spec.table_name, field.column, row_id)
            set_committed_value(target, field.key, field.type.deserialise(data))


def _row_id(state: InstanceState, spec: ModelSpec) -> Any:
    if spec.pk_key in state.dict:
        return state.dict[spec.pk_key]
    return state.identity[0] if state.identity else None
