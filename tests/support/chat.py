"""Real python-socketio clients on the portal's /chat namespace, for integration and fault tests."""
from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import requests
import socketio

from tests.support.portal_server import PortalServer, csrf_token, sign_in

NS = "/chat"
EVENTS = ("message", "error", "typing", "read", "presence", "unread", "reply", "server_shutdown", "session_ended")


class ChatClient:
    """A python-socketio client on /chat that records every event it receives."""

    def __init__(self, url: str, session: requests.Session | None, origin: str | None = None):
        self.url, self.session = url, session
        # Behind the load balancer every worker sees the portal's one external origin.
        self.sio = socketio.Client(reconnection=False, websocket_extra_options={"origin": origin} if origin else None)
        self.events: dict[str, list[Any]] = {name: [] for name in EVENTS}
        self._cond = threading.Condition()
        for name in EVENTS:
            self.sio.on(name, self._recorder(name), namespace=NS)

    def _recorder(self, name: str) -> Callable[[Any], None]:
        def record(data: Any = None) -> None:
            with self._cond:
                self.events[name].append(data)
                self._cond.notify_all()
        return record

    def connect(self, url: str | None = None) -> ChatClient:
        headers = {"Cookie": "; ".join(f"{c.name}={c.value}" for c in self.session.cookies)} if self.session else {}
        self.sio.connect(url or self.url, headers=headers, namespaces=[NS], transports=["websocket"], wait_timeout=10)
        return self

    def call(self, event: str, payload: Any, timeout: float = 10) -> dict:
        return self.sio.call(event, payload, namespace=NS, timeout=timeout)

    def send(self, conversation_id: str, body: str, key: str | None = None) -> dict:
        return self.call("send", {"conversation_id": conversation_id, "body": body,
                                  "idempotency_key": key or uuid.uuid4().hex})

    def wait_for(self, name: str, predicate: Callable[[Any], bool] = lambda _e: True, count: int = 1,
                 timeout: float = 10) -> list[Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [e for e in self.events[name] if predicate(e)]
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"expected {count} {name!r} events, got {len(found)}: {self.events[name][-5:]}")
                self._cond.wait(remaining)

    def received(self, name: str, predicate: Callable[[Any], bool] = lambda _e: True) -> list[Any]:
        with self._cond:
            return [e for e in self.events[name] if predicate(e)]

    def close(self) -> None:
        if self.sio.connected:
            self.sio.disconnect()


def in_conversation(conversation_id: str) -> Callable[[Any], bool]:
    return lambda event: isinstance(event, dict) and event.get("conversation_id") == conversation_id


def user_id_of(session: requests.Session, url: str) -> str:
    match = re.search(r'data-user-id="([^"]+)"', session.get(url + "/messages", timeout=10).text)
    assert match, "signed-in page has no data-user-id"
    return match.group(1)


def start_direct(url: str, session: requests.Session, other_id: str) -> str:
    token = csrf_token(session, url + "/messages")
    response = session.post(url + "/messages/start", data={"csrf_token": token, "clinician": other_id}, timeout=10)
    assert response.ok, response.text[:300]
    match = re.search(r"[?&]c=([0-9a-f-]{36})", response.url)
    assert match, f"start did not land on the conversation: {response.url}"
    return match.group(1)


def team_conversation(url: str, session: requests.Session, team_name: str) -> str:
    page = session.get(url + "/messages", timeout=10).text
    for match in re.finditer(r'data-conversation-id="([^"]+)" data-kind="team"[^>]*>\s*<span data-title>([^<]+)<', page):
        if match.group(2).startswith(team_name):
            return match.group(1)
    raise AssertionError(f"no {team_name} conversation on the page")


@contextmanager
def direct_chat_across_workers(first: PortalServer, second: PortalServer) -> Iterator[tuple[dict, str, ChatClient, ChatClient]]:
    """dr.chen on the first worker and dr.okafor on the second, in one direct conversation.

    Yields (user ids by login, conversation id, chen's client, okafor's client); closes both clients.
    """
    sessions = {login: sign_in(first.url, login) for login in ("dr.chen", "dr.okafor")}
    ids = {login: user_id_of(s, first.url) for login, s in sessions.items()}
    direct = start_direct(first.url, sessions["dr.chen"], ids["dr.okafor"])
    for session in sessions.values():
        session.close()  # the cookies are all the clients need from here on
    chen = ChatClient(first.url, sessions["dr.chen"]).connect()
    okafor = ChatClient(second.url, sessions["dr.okafor"], origin=first.url).connect()
    try:
        yield ids, direct, chen, okafor
    finally:
        chen.close()
        okafor.close()


class Timeline:
    """What one client knows of a conversation: messages by seq, from live events, acks and history."""

    def __init__(self, start_seq: int):
        self.start = start_seq
        self.by_seq: dict[int, dict] = {}
        self.lock = threading.Lock()

    def add(self, message: dict) -> None:
        with self.lock:
            known = self.by_seq.setdefault(message["seq"], message)
            assert known["id"] == message["id"], f"two messages with seq {message['seq']}: {known} / {message}"

    def absorb(self, client: ChatClient, conversation_id: str) -> int:
        """Take in the live ``message`` events ``client`` has received; return ``contiguous()``."""
        for message in client.received("message", lambda e: e.get("conversation_id") == conversation_id):
            self.add(message)
        return self.contiguous()

    def contiguous(self) -> int:
        """The highest seq up to which nothing is missing."""
        with self.lock:
            seq = self.start
            while seq + 1 in self.by_seq:
                seq += 1
            return seq


def catch_up(client: ChatClient, conversation_id: str, after_seq: int) -> list[dict]:
    """Every message after ``after_seq``, following ``has_more`` pages."""
    messages: list[dict] = []
    while True:
        page = client.call("history", {"conversation_id": conversation_id, "after_seq": after_seq, "limit": 20})
        assert page["ok"], page
        messages.extend(page["messages"])
        if not page["has_more"]:
            return messages
        after_seq = page["messages"][-1]["seq"]
