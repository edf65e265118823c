"""Messaging rules without a server: validation, rate limit, presence, and storage on a real SQLite file."""
from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

import portal.crypto.keyring as keyring_module
from portal.crypto import Keyring, generate_keyring_json, install_keyring
from portal.db import Base, bind_engine, create_engine, db_session
from portal.exceptions import MessagingError
from portal.messaging import service
from portal.messaging.events import PresenceRegistry
from portal.models import CareTeam, CareTeamMember, Conversation, Message, User

# --- validation ------------------------------------------------------------------------------------

def test_body_limits_count_utf8_bytes():
    assert service.validate_body("é" * 2048, 4096) == "é" * 2048
    with pytest.raises(MessagingError) as too_large:
        service.validate_body("é" * 2049, 4096)
    assert too_large.value.code == "too_large"
    for blank in ("", "  ", "\n\t"):
        with pytest.raises(MessagingError) as empty:
            service.validate_body(blank, 4096)
        assert empty.value.code == "empty"
    with pytest.raises(MessagingError) as wrong:
        service.validate_body(None, 4096)
    assert wrong.value.code == "bad_request"


@pytest.mark.parametrize("key", ["", "x" * 65, 7, None, "line\nbreak"])
def test_bad_idempotency_keys_are_refused(key):
    with pytest.raises(MessagingError) as refused:
        service.validate_idempotency_key(key)
    assert refused.value.code == "bad_request"


@pytest.mark.parametrize("value", [-1, "3", 1.5, True, None])
def test_bad_sequence_numbers_are_refused(value):
    with pytest.raises(MessagingError):
        service.validate_seq(value, "after_seq")


def test_parse_uuid_normalises_or_rejects():
    value = str(uuid.uuid4())
    assert service.parse_uuid(value.upper()) == value
    assert service.parse_uuid("conv:1") is None and service.parse_uuid(42) is None


# --- rate limit and presence -------------------------------------------------------------------------

def test_presence_tracks_users_across_connections():
    registry = PresenceRegistry()
    registry.connect("s1", "alice")
    registry.connect("s2", "alice")
    registry.connect("s3", "bob")
    for sid in ("s1", "s2", "s3"):
        registry.join(sid, "c")
    registry.set_state("s1", "c", "away")
    assert registry.snapshot("c") == {"alice": "online", "bob": "online"}, "online wins over away"
    assert registry.leave("s1", "c") is False, "alice is still here on s2"
    user, gone = registry.disconnect("s2")
    assert user == "alice" and gone == ["c"]
    assert registry.snapshot("c") == {"bob": "online"}
    assert registry.set_state("s9", "c", "away") is False


# --- storage on SQLite -----------------------------------------------------------------------------------

@pytest.fixture
def database(tmp_path) -> Iterator[sa.Engine]:
    previous = keyring_module._active
    install_keyring(Keyring.load(generate_keyring_json()))
    engine = create_engine(f"sqlite:///{tmp_path / 'messaging.db'}")
    Base.metadata.create_all(engine)
    bind_engine(engine)
    try:
        yield engine
    finally:
        db_session.remove()
        engine.dispose()
        keyring_module._active = previous


def _clinician(name: str) -> User:
    user = User(issuer="https://idp.test", subject=name, display_name=name, roles="clinician")
    db_session.add(user)
    db_session.commit()
    return user


def test_direct_conversation_is_created_once_per_pair(database):
    chen, okafor = _clinician("chen"), _clinician("okafor")
    first = service.get_or_create_direct(chen, okafor)
    again = service.get_or_create_direct(okafor, chen)
    assert first.id == again.id and first.kind == "direct"
    assert service.member_ids(first) == sorted([chen.id, okafor.id])
    with pytest.raises(MessagingError):
        service.get_or_create_direct(chen, chen)


def test_team_list_unread_and_read_positions(database):
    chen, okafor = _clinician("chen"), _clinician("okafor")
    team = CareTeam(name="Family Medicine")
    db_session.add(team)
    db_session.flush()
    db_session.add_all([CareTeamMember(team_id=team.id, user_id=chen.id), CareTeamMember(team_id=team.id, user_id=okafor.id)])
    db_session.commit()
    [summary] = service.list_conversations(chen)
    assert summary.kind == "team" and summary.title == "Family Medicine team" and summary.unread == 0
    for n in range(3):
        service.store_message(summary.id, okafor.id, f"note {n}", f"key-{n}")
    conversation = db_session.get(Conversation, summary.id)
    assert service.list_conversations(chen)[0].unread == 3
    assert service.mark_read(conversation, chen.id, 2) == 2
    assert service.mark_read(conversation, chen.id, 1) == 2, "read positions never move back"
    assert service.mark_read(conversation, chen.id, 99) == 3, "nor past the last message"
    assert service.list_conversations(chen)[0].unread == 0


def test_seq_allocation_is_atomic_and_idempotent_under_concurrency(database):
    chen, okafor = _clinician("chen"), _clinician("okafor")
    conversation_id = service.get_or_create_direct(chen, okafor).id
    senders = {"chen": chen.id, "okafor": okafor.id}
    results: list[tuple[str, str, bool]] = []  # (key, message id, duplicate) read while the session is live
    lock = threading.Lock()

    def send(name: str) -> None:
        try:
            for n in range(15):
                # Every message twice, as a client retrying after a lost ack would.
                for _attempt in range(2):
                    stored = service.store_message(conversation_id, senders[name], f"{name} {n}", f"{name}-{n}")
                    with lock:
                        results.append((stored.message.idempotency_key, stored.message.id, stored.duplicate))
        finally:
            db_session.remove()

    threads = [threading.Thread(target=send, args=(name,)) for name in senders for _copy in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    db_session.remove()
    stored = db_session.scalars(sa.select(Message).where(Message.conversation_id == conversation_id)
                                .order_by(Message.seq)).all()
    assert [m.seq for m in stored] == list(range(1, 31)), "one message per key, no gaps, no duplicates"
    assert db_session.get(Conversation, conversation_id).last_seq == 30
    assert len(results) == 120 and sum(not duplicate for _k, _i, duplicate in results) == 30
    by_key = {m.idempotency_key: m.id for m in stored}
    assert all(by_key[key] == message_id for key, message_id, _d in results)
    raw = database.connect().execute(sa.text("SELECT body FROM message")).scalars().all()
    assert all(body.startswith("v1:") and "chen" not in body for body in raw)
