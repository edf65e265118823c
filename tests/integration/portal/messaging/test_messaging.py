"""Real-time messaging over the real eventlet server with real python-socketio clients.

One portal (SQLite) serves the module; PostgreSQL and Redis variants start their own servers. The module is
long because the core behaviour is written once and run against each of those servers.
"""
from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import engineio
import pytest
import requests
import socketio
import sqlalchemy as sa

from tests.support.audit_log import audit_rows
from tests.support.chat import (
    NS,
    ChatClient,
    direct_chat_across_workers,
    in_conversation,
    start_direct,
    team_conversation,
    user_id_of,
)
from tests.support.portal_server import another_worker, csrf_token, running_portal, sign_in

pytestmark = pytest.mark.slow  # started first (tests/conftest.py): one of the suite's longest modules

FAMILY_MEDICINE = "Family Medicine"


@pytest.fixture(scope="module")
def people(portal) -> dict[str, Any]:
    sessions = {login: sign_in(portal.url, login) for login in ("dr.chen", "dr.okafor", "dr.reyes")}
    ids = {login: user_id_of(s, portal.url) for login, s in sessions.items()}
    direct = start_direct(portal.url, sessions["dr.chen"], ids["dr.okafor"])
    return {"sessions": sessions, "ids": ids, "direct": direct}


@pytest.fixture
def clients(portal) -> Iterator[Callable[..., ChatClient]]:
    made: list[ChatClient] = []

    def make(session: requests.Session | None, url: str | None = None) -> ChatClient:
        client = ChatClient(url or portal.url, session)
        made.append(client)
        return client.connect()

    yield make
    for client in made:
        client.close()


# --- the core behaviour, shared by the SQLite and PostgreSQL runs ---------------------------------

def exchange_both_ways(chen: ChatClient, okafor: ChatClient, conversation_id: str, ids: dict[str, str]) -> None:
    joined_chen = chen.call("join", {"conversation_id": conversation_id})
    assert joined_chen["ok"], joined_chen
    joined_okafor = okafor.call("join", {"conversation_id": conversation_id})
    assert joined_okafor["ok"] and joined_okafor["conversation"]["kind"] == "direct"
    assert joined_okafor["presence"].get(ids["dr.chen"]) == "online"
    chen.wait_for("presence", lambda e: e["user"]["id"] == ids["dr.okafor"] and e["state"] == "online")
    start = joined_okafor["last_seq"]

    ack = chen.send(conversation_id, "Can you review the labs for room 4?")
    assert ack["ok"] and not ack["duplicate"], ack
    sent = ack["message"]
    assert sent["seq"] == start + 1 and sent["sender"]["id"] == ids["dr.chen"] and sent["id"] and sent["sent_at"]
    got = okafor.wait_for("message", lambda e: e["id"] == sent["id"])[0]
    assert got["body"] == "Can you review the labs for room 4?" and got["seq"] == sent["seq"]

    okafor.call("typing", {"conversation_id": conversation_id})
    chen.wait_for("typing", lambda e: e["user"]["id"] == ids["dr.okafor"])
    reply = okafor.send(conversation_id, "On it <b>now</b> & done")
    assert reply["ok"] and reply["message"]["seq"] == start + 2
    got = chen.wait_for("message", lambda e: e["id"] == reply["message"]["id"])[0]
    assert got["body"] == "On it <b>now</b> & done", "bodies are plain text, not escaped by the server"

    read = chen.call("read", {"conversation_id": conversation_id, "seq": reply["message"]["seq"]})
    assert read["ok"] and read["seq"] == start + 2
    okafor.wait_for("read", lambda e: e["user"]["id"] == ids["dr.chen"] and e["seq"] == start + 2)


def idempotent_retry(chen: ChatClient, okafor: ChatClient, conversation_id: str) -> None:
    key = uuid.uuid4().hex
    first = chen.send(conversation_id, "Only once, please", key)
    second = chen.send(conversation_id, "Only once, please", key)
    assert first["ok"] and second["ok"] and second["duplicate"] is True
    assert second["message"]["id"] == first["message"]["id"] and second["message"]["seq"] == first["message"]["seq"]
    okafor.wait_for("message", lambda e: e["id"] == first["message"]["id"])
    after = chen.send(conversation_id, "marker after the retry")  # anything broadcast twice would arrive before this
    okafor.wait_for("message", lambda e: e["id"] == after["message"]["id"])
    assert len(okafor.received("message", lambda e: e["idempotency_key"] == key)) == 1
    assert after["message"]["seq"] == first["message"]["seq"] + 1, "a retry must not allocate a sequence number"
    page = chen.call("history", {"conversation_id": conversation_id, "after_seq": first["message"]["seq"] - 1})
    assert [m["idempotency_key"] for m in page["messages"]].count(key) == 1


def reconnect_catch_up(chen: ChatClient, make_okafor: Callable[[], ChatClient], conversation_id: str) -> None:
    okafor = make_okafor()
    joined = okafor.call("join", {"conversation_id": conversation_id})
    last_seen = joined["last_seq"]
    okafor.close()
    bodies = [f"while you were away {n}" for n in range(3)]
    acks = [chen.send(conversation_id, body) for body in bodies]
    assert all(a["ok"] for a in acks)
    okafor = make_okafor()
    assert okafor.call("join", {"conversation_id": conversation_id})["ok"]
    page = okafor.call("history", {"conversation_id": conversation_id, "after_seq": last_seen, "limit": 50})
    assert page["ok"]
    assert [m["body"] for m in page["messages"]] == bodies
    assert [m["seq"] for m in page["messages"]] == [last_seen + 1, last_seen + 2, last_seen + 3]
    assert [m["id"] for m in page["messages"]] == [a["message"]["id"] for a in acks]
    okafor.close()


def outsider_refused(reyes: ChatClient, chen: ChatClient, conversation_id: str, db_url: str, reyes_id: str) -> None:
    before = chen.call("history", {"conversation_id": conversation_id, "after_seq": 0, "limit": 100})
    for event, payload in (("join", {}), ("send", {"body": "let me in", "idempotency_key": uuid.uuid4().hex}),
                           ("history", {"after_seq": 0}), ("read", {"seq": 1})):
        ack = reyes.call(event, {"conversation_id": conversation_id, **payload})
        assert ack["ok"] is False and ack["error"]["code"] == "forbidden" and ack["error"]["message"], (event, ack)
    reyes.wait_for("error", lambda e: e["code"] == "forbidden", count=4)
    assert not reyes.received("message", in_conversation(conversation_id))
    after = chen.call("history", {"conversation_id": conversation_id, "after_seq": 0, "limit": 100})
    assert after["last_seq"] == before["last_seq"] and after["messages"] == before["messages"]
    denied = [r for r in audit_rows(db_url, action="conversation.join") + audit_rows(db_url, action="conversation.send")
              if r["actor_id"] == reyes_id and r["resource_id"] == conversation_id]
    assert {(r["action"], r["outcome"]) for r in denied} == {("conversation.join", "denied"), ("conversation.send", "denied")}


# --- SQLite: the module's portal ------------------------------------------------------------------

def test_connect_without_cookie_is_refused(portal):
    client = socketio.Client(reconnection=False)
    reasons: list[Any] = []
    client.on("connect_error", reasons.append, namespace=NS)
    with pytest.raises(socketio.exceptions.ConnectionError):
        client.connect(portal.url, namespaces=[NS], transports=["websocket"], wait_timeout=5)
    assert reasons == [{"message": "unauthenticated"}]
    denied = [r for r in audit_rows(portal.database, action="chat.connect") if r["outcome"] == "denied"]
    assert denied and denied[-1]["actor_id"] is None


def test_two_clinicians_exchange_messages_both_ways(portal, people, clients):
    chen, okafor = clients(people["sessions"]["dr.chen"]), clients(people["sessions"]["dr.okafor"])
    exchange_both_ways(chen, okafor, people["direct"], people["ids"])
    sends = [r for r in audit_rows(portal.database, action="conversation.send") if r["outcome"] == "allowed"]
    assert sends and all("message_id" in json.loads(r["details"]) for r in sends)
    assert not any("review the labs" in (r["details"] + (r["reason"] or "")) for r in sends)


def test_outsider_is_refused_and_audited(portal, people, clients):
    chen, reyes = clients(people["sessions"]["dr.chen"]), clients(people["sessions"]["dr.reyes"])
    outsider_refused(reyes, chen, people["direct"], portal.database, people["ids"]["dr.reyes"])


def test_idempotent_retry_stores_and_broadcasts_once(people, clients):
    chen, okafor = clients(people["sessions"]["dr.chen"]), clients(people["sessions"]["dr.okafor"])
    for client in (chen, okafor):
        assert client.call("join", {"conversation_id": people["direct"]})["ok"]
    idempotent_retry(chen, okafor, people["direct"])


def test_reconnect_catches_up_with_history(people, clients):
    chen = clients(people["sessions"]["dr.chen"])
    assert chen.call("join", {"conversation_id": people["direct"]})["ok"]
    reconnect_catch_up(chen, lambda: clients(people["sessions"]["dr.okafor"]), people["direct"])


def test_every_refusal_has_its_code(portal, people, clients):
    chen = clients(people["sessions"]["dr.chen"])
    direct = people["direct"]
    before = chen.call("history", {"conversation_id": direct, "after_seq": 0})["last_seq"]
    cases = [
        ("send", {"conversation_id": direct, "body": "x" * 4097, "idempotency_key": "k-big"}, "too_large"),
        ("send", {"conversation_id": direct, "body": "é" * 2049, "idempotency_key": "k-big-utf8"}, "too_large"),
        ("send", {"conversation_id": direct, "body": "   \n ", "idempotency_key": "k-empty"}, "empty"),
        ("send", {"conversation_id": direct, "body": 42, "idempotency_key": "k-type"}, "bad_request"),
        ("send", {"conversation_id": direct, "body": "lone \ud800 surrogate", "idempotency_key": "k-surrogate"},
         "bad_request"),
        ("send", {"conversation_id": direct, "body": "nul \x00 byte", "idempotency_key": "k-nul"}, "bad_request"),
        ("send", {"conversation_id": direct, "body": "no key"}, "bad_request"),
        ("send", ["not", "an", "object"], "bad_request"),
        ("join", {}, "bad_request"),
        ("history", {"conversation_id": direct, "after_seq": -1}, "bad_request"),
        ("read", {"conversation_id": direct, "seq": "3"}, "bad_request"),
        ("join", {"conversation_id": str(uuid.uuid4())}, "not_found"),
        ("join", {"conversation_id": "no-such-thing"}, "not_found"),
        ("send", {"conversation_id": str(uuid.uuid4()), "body": "hello?", "idempotency_key": "k-nf"}, "not_found"),
        ("history", {"conversation_id": str(uuid.uuid4()), "after_seq": 0}, "not_found"),
    ]
    for event, payload, code in cases:
        ack = chen.call(event, payload)
        assert ack["ok"] is False and ack["error"]["code"] == code and ack["error"]["message"], (event, payload, ack)
    chen.wait_for("error", count=len(cases))
    assert chen.call("history", {"conversation_id": direct, "after_seq": 0})["last_seq"] == before
    assert chen.call("history", {"conversation_id": direct, "after_seq": 0, "limit": 10_000})["ok"]


def test_malformed_packets_from_anyone_are_refused_with_a_warning_not_an_error(portal):
    """An anonymous client's unreadable or deeply nested packets must not fill the logs with errors."""
    errors_before = portal.log_path.read_text(errors="replace").count('"level": "ERROR"')
    client = engineio.Client()
    client.connect(portal.url, transports=["websocket"], engineio_path="socket.io")
    try:
        for payload in ('2/chat,["history",' + "[" * 3000 + "]" * 3000 + "]", '2/chat,["history",{not json',
                        "x", "9", '512345678901-["a"]', "2" + "1" * 150 + '["a"]', '2{"a":1}', "2[]", "2/chat,[]",
                        '2/chat,[7]', '51-["a",{"_placeholder":true,"num":7}]'):
            client.send(payload)
        client.send(b"an attachment nobody announced")
        client.send('51-["a",{"_placeholder":true,"num":"x"}]')
        client.send(b"its attachment")
        time.sleep(1)
    finally:
        client.disconnect()
    log = portal.log_path.read_text(errors="replace")
    assert log.count('"level": "ERROR"') == errors_before and "Traceback" not in log
    assert "malformed Socket.IO packet refused" in log


def test_flooding_is_rate_limited(portal, people, clients):
    reyes = clients(people["sessions"]["dr.reyes"])
    team = team_conversation(portal.url, people["sessions"]["dr.reyes"], "Endocrinology")
    assert reyes.call("join", {"conversation_id": team})["ok"]
    acks = [reyes.send(team, f"flood {n}") for n in range(35)]
    accepted = [a for a in acks if a["ok"]]
    # The window counts every send attempt of the last minute (dr.reyes's refused sends above included).
    assert 25 <= len(accepted) <= 30 and acks[:len(accepted)] == accepted
    assert all(a["error"]["code"] == "rate_limited" for a in acks[len(accepted):])
    history = reyes.call("history", {"conversation_id": team, "after_seq": 0, "limit": 100})
    assert [m["id"] for m in history["messages"]] == [a["message"]["id"] for a in accepted]
    reyes.wait_for("error", lambda e: e["code"] == "rate_limited", count=len(acks) - len(accepted))


def test_removed_clinician_loses_the_room(portal, people, clients):
    okafor = clients(people["sessions"]["dr.okafor"])
    team = team_conversation(portal.url, people["sessions"]["dr.okafor"], FAMILY_MEDICINE)
    assert okafor.call("join", {"conversation_id": team})["ok"]
    engine = sa.create_engine(portal.database)
    team_id = " (SELECT team_id FROM conversation WHERE id = :c) "
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DELETE FROM care_team_member WHERE team_id = {team_id} AND user_id = :u"),
                         {"c": team, "u": people["ids"]["dr.okafor"]})
        chen = clients(people["sessions"]["dr.chen"])
        assert chen.call("join", {"conversation_id": team})["ok"]
        sent = chen.send(team, "team-only news")  # okafor is still joined but only listening
        assert sent["ok"]
        okafor.wait_for("error", lambda e: e.get("conversation_id") == team and e["code"] == "forbidden")
        chen.wait_for("message", lambda e: e["id"] == sent["message"]["id"])
        time.sleep(0.3)
        assert not okafor.received("message", lambda e: e["id"] == sent["message"]["id"])
        for event, payload in (("send", {"body": "am I still here?", "idempotency_key": uuid.uuid4().hex}),
                               ("history", {"after_seq": 0}), ("join", {})):
            ack = okafor.call(event, {"conversation_id": team, **payload})
            assert ack["ok"] is False and ack["error"]["code"] == "forbidden", (event, ack)
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"INSERT INTO care_team_member (team_id, user_id) VALUES ({team_id}, :u)"),
                         {"c": team, "u": people["ids"]["dr.okafor"]})
        engine.dispose()


def test_patient_gets_care_team_replies_live(portal, clients):
    alice = sign_in(portal.url, "alice")
    chen_session = sign_in(portal.url, "dr.chen")
    token = csrf_token(alice, portal.url + "/messages")
    landed = alice.post(portal.url + "/messages/start", data={"csrf_token": token}, timeout=10)
    thread = re.search(r"[?&]c=([0-9a-f-]{36})", landed.url).group(1)
    patient = clients(alice)  # on the chart page: connected, not joined to the thread
    chen = clients(chen_session)
    assert chen.call("join", {"conversation_id": thread})["ok"]
    sent = chen.send(thread, "Your results look good.")
    reply = patient.wait_for("reply", lambda e: e["id"] == sent["message"]["id"])[0]
    assert reply["body"] == "Your results look good." and reply["sender"]["id"] == sent["message"]["sender"]["id"]
    patient.wait_for("unread", lambda e: e.get("conversation_id") == thread and e["unread"] >= 1)


def test_body_is_not_stored_in_plaintext(portal, people, clients):
    chen = clients(people["sessions"]["dr.chen"])
    marker = f"plaintext-canary-{uuid.uuid4().hex}"
    assert chen.send(people["direct"], marker)["ok"]
    path = Path(portal.database.removeprefix("sqlite:///"))
    for candidate in (path, Path(f"{path}-wal")):
        if candidate.exists():
            assert marker.encode() not in candidate.read_bytes(), f"message body found in {candidate.name}"
    engine = sa.create_engine(portal.database)
    try:
        with engine.connect() as conn:
            stored = conn.execute(sa.text("SELECT body FROM message ORDER BY rowid DESC LIMIT 1")).scalar_one()
    finally:
        engine.dispose()
    assert stored.startswith("v1:") and marker not in stored


def test_killed_server_loses_no_acknowledged_message(portal, people, clients):
    chen = clients(people["sessions"]["dr.chen"])
    acked = [chen.send(people["direct"], f"before the crash {n}") for n in range(10)]
    assert all(a["ok"] for a in acked)
    chen.close()
    portal.kill()
    portal.start()
    chen = clients(people["sessions"]["dr.chen"])
    first = acked[0]["message"]["seq"]
    page = chen.call("history", {"conversation_id": people["direct"], "after_seq": first - 1, "limit": 100})
    assert [m["id"] for m in page["messages"]][:10] == [a["message"]["id"] for a in acked]


def test_sigterm_tells_clients_to_reconnect(portal, people, clients):
    chen = clients(people["sessions"]["dr.chen"])
    for session in people["sessions"].values():
        session.close()  # idle HTTP keep-alive connections would hold the server's exit back
    portal.stop()
    try:
        chen.wait_for("server_shutdown", timeout=5)
        assert chen.received("server_shutdown")[0] == {"reconnect": True}
        deadline = time.monotonic() + 5
        while chen.sio.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not chen.sio.connected, "the worker closes its connections so clients reconnect elsewhere"
    finally:
        portal.start()


# --- PostgreSQL -------------------------------------------------------------------------------------

@pytest.mark.postgres
def test_core_messaging_on_postgres(tmp_path, postgres_url):
    with running_portal(tmp_path, postgres_url, patients=4) as server:
        sessions = {login: sign_in(server.url, login) for login in ("dr.chen", "dr.okafor", "dr.reyes")}
        ids = {login: user_id_of(s, server.url) for login, s in sessions.items()}
        direct = start_direct(server.url, sessions["dr.chen"], ids["dr.okafor"])
        made: list[ChatClient] = []

        def connect(login: str) -> ChatClient:
            made.append(ChatClient(server.url, sessions[login]).connect())
            return made[-1]

        try:
            chen, okafor, reyes = connect("dr.chen"), connect("dr.okafor"), connect("dr.reyes")
            exchange_both_ways(chen, okafor, direct, ids)
            idempotent_retry(chen, okafor, direct)
            reconnect_catch_up(chen, lambda: connect("dr.okafor"), direct)
            outsider_refused(reyes, chen, direct, postgres_url, ids["dr.reyes"])
            marker = f"plaintext-canary-{uuid.uuid4().hex}"
            assert chen.send(direct, marker)["ok"]
            concurrent_senders_get_distinct_seqs(chen, okafor, direct)
        finally:
            for client in made:
                client.close()
            for session in sessions.values():
                session.close()
        engine = sa.create_engine(postgres_url)
        try:
            with engine.connect() as conn:
                dump = conn.execute(sa.text("SELECT string_agg(m::text, '|') FROM message m")).scalar_one()
        finally:
            engine.dispose()
        assert marker not in dump and "review the labs" not in dump


def concurrent_senders_get_distinct_seqs(chen: ChatClient, okafor: ChatClient, conversation_id: str) -> None:
    results: list[dict] = []

    def burst(client: ChatClient, tag: str) -> None:
        results.extend(client.send(conversation_id, f"{tag} {n}") for n in range(8))

    threads = [threading.Thread(target=burst, args=(c, t)) for c, t in ((chen, "c"), (okafor, "o"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seqs = sorted(r["message"]["seq"] for r in results if r["ok"])
    assert len(seqs) == 16 and seqs == list(range(seqs[0], seqs[0] + 16))


# --- Redis: two workers -----------------------------------------------------------------------------

@pytest.mark.redis
def test_two_workers_deliver_to_each_other(tmp_path, redis_url):
    with running_portal(tmp_path, f"sqlite:///{tmp_path / 'portal.db'}", patients=4,
                        PORTAL_MESSAGE_QUEUE=redis_url) as first:
        with another_worker(first) as second, direct_chat_across_workers(first, second) as (ids, direct, chen, okafor):
            assert chen.call("join", {"conversation_id": direct})["ok"]
            assert okafor.call("join", {"conversation_id": direct})["ok"]
            chen.wait_for("presence", lambda e: e["user"]["id"] == ids["dr.okafor"] and e["announce"])
            chen_acks = [chen.send(direct, f"from worker one {n}") for n in range(5)]
            okafor_acks = [okafor.send(direct, f"from worker two {n}") for n in range(5)]
            got_okafor = okafor.wait_for("message", lambda e: e["sender"]["id"] == ids["dr.chen"], count=5)
            got_chen = chen.wait_for("message", lambda e: e["sender"]["id"] == ids["dr.okafor"], count=5)
            assert [m["body"] for m in got_okafor] == [f"from worker one {n}" for n in range(5)]
            assert [m["body"] for m in got_chen] == [f"from worker two {n}" for n in range(5)]
            assert [m["seq"] for m in got_okafor] == [a["message"]["seq"] for a in chen_acks]
            assert [m["seq"] for m in got_chen] == [a["message"]["seq"] for a in okafor_acks]
            okafor.wait_for("unread", lambda e: e.get("conversation_id") == direct and e["unread"] >= 5)


def test_only_what_a_person_does_keeps_a_chat_session_alive(tmp_path):
    """Automatic presence answers and read receipts from an unattended tab must not defeat the idle time-out."""
    with running_portal(tmp_path, f"sqlite:///{tmp_path / 'portal.db'}", patients=2,
                        PORTAL_SESSION_IDLE_MINUTES="0.05") as portal:
        active, unattended = sign_in(portal.url, "dr.chen"), sign_in(portal.url, "dr.okafor")
        team = team_conversation(portal.url, active, "Family Medicine")
        team_conversation(portal.url, unattended, "Family Medicine")
        clients = {name: ChatClient(portal.url, session).connect()
                   for name, session in (("active", active), ("unattended", unattended))}
        try:
            for client in clients.values():
                assert client.call("join", {"conversation_id": team})["ok"]
            for _ in range(6):  # 6 s, twice the idle limit
                clients["active"].call("typing", {"conversation_id": team})
                if clients["unattended"].sio.connected:  # the server drops it once its session idles out
                    clients["unattended"].sio.emit("presence", {"conversation_id": team, "state": "online"}, namespace=NS)
                time.sleep(1)
            assert active.get(portal.url + "/api/v1/me", timeout=10).status_code == 200
            assert unattended.get(portal.url + "/api/v1/me", timeout=10).status_code == 401
            assert clients["unattended"].received("session_ended")
        finally:
            for client in clients.values():
                client.close()
