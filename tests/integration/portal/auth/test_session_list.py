"""My sessions and the administrator's session list, over real HTTP and real Socket.IO.

A signed-in person sees every place they are signed in (device, address, when) and can end any of
them; an administrator can end all sessions of a user. Ending a session works at once on every
worker: its pages go back to sign-in, its API calls get 401 and its open chat connection is told
why and cut. Most tests use the in-process portal on SQLite (tests/support/harness.py, one transaction for
the module, ``requests`` through the development provider's forms); the cross-worker ones, with their real
Socket.IO connections, use two workers sharing PostgreSQL and Redis (skipped locally without them, failing in CI).
The module is long because both halves use the same helpers for devices, chats and the stored session rows.
"""
from __future__ import annotations

import html
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import pytest
import requests
import socketio
import sqlalchemy as sa

from tests.support.audit_log import audit_rows
from tests.support.chat import NS, ChatClient
from tests.support.database import connected
from tests.support.environment import free_port
from tests.support.harness import InProcessPortal
from tests.support.npm_idp import start_portals, stop_portals
from tests.support.portal_server import (
    PortalServer,
    another_worker,
    csrf_token,
    portal_env,
    prepare_database,
    sign_in,
)
from tests.support.shared_services import create_database, drop_database, postgres_server_url, redis_url

FIREFOX_ON_WINDOWS = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0"
SAFARI_ON_IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
                    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1")
CHROME_ON_PIXEL = ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
                   "Chrome/126.0.0.0 Mobile Safari/537.36")
FIREFOX_DEVICE = "PC / Windows 10 / Firefox 128.0"
IPHONE_DEVICE = "iPhone / iOS 17.5 / Mobile Safari 17.5"
PIXEL_DEVICE = "Pixel 8 / Android 14 / Chrome Mobile 126.0.0"
CUT_WITHIN = 1.0  # seconds from the End response until the revoked session's socket is disconnected


# --- fixtures --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def portal(portal_in_process_for_module) -> InProcessPortal:
    return portal_in_process_for_module


@dataclass
class Workers:
    a: PortalServer
    b: PortalServer

    @property
    def database_url(self) -> str:
        return self.a.env["PORTAL_DATABASE_URL"]


@pytest.fixture(scope="module")
def workers(tmp_path_factory) -> Iterator[Workers]:
    """Two workers of one portal sharing a fresh PostgreSQL database and a Redis message queue."""
    postgres_server_url()  # skipped (failed in CI) without PostgreSQL or Redis
    queue = redis_url()
    tmp: Path = tmp_path_factory.mktemp("two-workers")
    database_url = create_database()
    try:
        port = free_port()
        env = portal_env(tmp, database_url, port, PORTAL_MESSAGE_QUEUE=queue)
        prepare_database(env, patients=4)
        first = PortalServer(env, port, tmp / f"server-{port}.log")
        second = another_worker(first)
        try:
            start_portals(first, second)
            yield Workers(first, second)
        finally:
            stop_portals(first, second)
    finally:
        drop_database(database_url)


# --- helpers ---------------------------------------------------------------------------------------------------

def browser(user_agent: str) -> requests.Session:
    session = requests.Session()
    session.headers["User-Agent"] = user_agent
    return session


def signed_in(url: str, login: str, user_agent: str) -> requests.Session:
    return sign_in(url, login, session=browser(user_agent))


@dataclass(frozen=True)
class Row:
    id: str
    device: str
    address: str
    this_browser: bool
    end_action: str


ROW = re.compile(r'<tr data-session="([^"]+)"[^>]*>\s*<td>(.*?)</td>\s*<td>(.*?)</td>.*?<form method="post" action="([^"]+)"',
                 re.S)


def my_sessions(session: requests.Session, url: str) -> tuple[dict[str, Row], str]:
    """The rows of the signed-in person's session list (by session id), and the raw page."""
    page = session.get(url + "/auth/sessions", allow_redirects=False, timeout=10)
    assert page.status_code == 200, (page.status_code, page.headers.get("Location"))
    rows = {}
    for session_id, device_cell, address, action in ROW.findall(page.text):
        device = html.unescape(re.sub(r"<[^>]+>", "", device_cell)).strip()
        this_browser = device.endswith("This browser")
        rows[session_id] = Row(session_id, device.removesuffix("This browser").strip(), html.unescape(address).strip(),
                               this_browser, action)
    assert len(rows) == page.text.count("<tr data-session="), "a session row the test could not read"
    return rows, page.text


def this_session_id(session: requests.Session, url: str) -> str:
    current = [row.id for row in my_sessions(session, url)[0].values() if row.this_browser]
    assert len(current) == 1, f"exactly one row must say 'This browser', got {current}"
    return current[0]


def end_from_list(session: requests.Session, url: str, session_id: str, **kwargs) -> requests.Response:
    """Press the End button of one row of the session list (the form's own action and CSRF token)."""
    rows, page = my_sessions(session, url)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    return session.post(urljoin(url, rows[session_id].end_action), data={"csrf_token": token},
                        allow_redirects=False, timeout=10, **kwargs)


def api_status(session: requests.Session, url: str) -> int:
    return session.get(url + "/api/v1/me", allow_redirects=False, timeout=10).status_code


def same_cookies(session: requests.Session) -> requests.Session:
    """Another client holding the same session cookie (the first refused request clears it from a browser)."""
    copy = browser(session.headers["User-Agent"])
    copy.cookies.update(session.cookies)
    return copy


def user_id(session: requests.Session, url: str) -> str:
    return session.get(url + "/api/v1/me", timeout=10).json()["id"]


class WatchedChat(ChatClient):
    """A /chat client that also notes when (and after which events) the server disconnects it."""

    def __init__(self, url: str, session: requests.Session, origin: str | None = None):
        super().__init__(url, session, origin=origin)
        self.disconnected = threading.Event()
        self.disconnected_at: float | None = None
        self.session_ended_before_disconnect: list = []
        self.sio.on("disconnect", self._on_disconnect, namespace=NS)

    def _on_disconnect(self, *_reason) -> None:
        self.disconnected_at = time.monotonic()
        self.session_ended_before_disconnect = list(self.events["session_ended"])
        self.disconnected.set()


def assert_told_and_cut(chat: WatchedChat, ended_at: float) -> None:
    """The socket got session_ended (reason revoked) first, then was disconnected within CUT_WITHIN seconds."""
    assert chat.disconnected.wait(CUT_WITHIN + 5), "the revoked session's socket was never disconnected"
    assert chat.disconnected_at - ended_at <= CUT_WITHIN, \
        f"socket cut {chat.disconnected_at - ended_at:.2f}s after the session was ended"
    told = chat.session_ended_before_disconnect
    assert len(told) == 1 and told[0]["reason"] == "revoked", told
    assert told[0]["message"]
    assert not chat.sio.connected


def assert_page_goes_to_sign_in(session: requests.Session, url: str, reason: str) -> None:
    page = session.get(url + "/messages", allow_redirects=False, timeout=10)
    assert page.status_code == 302
    assert page.headers["Location"].startswith(f"/auth/signin?reason={reason}"), page.headers["Location"]


def assert_chat_refused(url: str, session: requests.Session, origin: str | None = None) -> None:
    with pytest.raises(socketio.exceptions.ConnectionError):
        ChatClient(url, session, origin=origin).connect()


def login_session_rows(database: str | sa.Connection) -> list[dict]:
    with connected(database) as conn:
        return [dict(row) for row in conn.execute(sa.text("SELECT * FROM login_session")).mappings()]


def assert_stored_encrypted(database: str | sa.Connection, session_id: str, user_agent: str) -> None:
    """The session's address and user agent are in the database, but only as ciphertext."""
    rows = login_session_rows(database)
    row = next(r for r in rows if r["id"] == session_id)
    assert row["user_agent"] and row["source_ip"], "the session's device and address were not stored at all"
    assert "127.0.0.1" not in row["source_ip"]
    for probe in (user_agent, user_agent[:30], "Mozilla/5.0", "127.0.0.1"):
        assert probe not in row["user_agent"]
    dump = repr(rows)
    assert user_agent not in dump and user_agent[:30] not in dump


# --- my sessions (one worker, SQLite) --------------------------------------------------------------------------

def test_each_sign_in_is_listed_with_its_device_address_and_this_browser(portal: InProcessPortal) -> None:
    laptop = signed_in(portal.url, "alice", FIREFOX_ON_WINDOWS)
    phone = signed_in(portal.url, "alice", SAFARI_ON_IPHONE)
    bob = signed_in(portal.url, "bob", CHROME_ON_PIXEL)
    laptop_id, phone_id = this_session_id(laptop, portal.url), this_session_id(phone, portal.url)
    assert laptop_id != phone_id

    from_laptop, laptop_page = my_sessions(laptop, portal.url)
    from_phone, _ = my_sessions(phone, portal.url)
    assert set(from_laptop) == set(from_phone) == {laptop_id, phone_id}
    for rows in (from_laptop, from_phone):
        assert rows[laptop_id].device == FIREFOX_DEVICE
        assert rows[phone_id].device == IPHONE_DEVICE
        assert {row.address for row in rows.values()} == {"127.0.0.1"}
    assert from_laptop[laptop_id].this_browser and not from_laptop[phone_id].this_browser
    assert from_phone[phone_id].this_browser and not from_phone[laptop_id].this_browser
    assert "Sign out here" in laptop_page and "End session" in laptop_page

    # Bob's session is on his own list and nowhere on Alice's page, not even its id.
    bob_id = this_session_id(bob, portal.url)
    assert set(my_sessions(bob, portal.url)[0]) == {bob_id}
    for page in (laptop_page, laptop.get(portal.url + "/auth/sessions", timeout=10).text):
        assert bob_id not in page and PIXEL_DEVICE not in page and "Pixel" not in page


def test_the_list_needs_a_signed_in_user(portal: InProcessPortal) -> None:
    page = requests.get(portal.url + "/auth/sessions", allow_redirects=False, timeout=10)
    assert page.status_code == 302 and page.headers["Location"].startswith("/auth/signin")


def test_ending_your_own_session_signs_you_out_there_only(portal: InProcessPortal) -> None:
    here = signed_in(portal.url, "dr.reyes", FIREFOX_ON_WINDOWS)
    elsewhere = signed_in(portal.url, "dr.reyes", SAFARI_ON_IPHONE)
    here_id, elsewhere_id = this_session_id(here, portal.url), this_session_id(elsewhere, portal.url)
    reyes = user_id(here, portal.url)

    response = end_from_list(here, portal.url, here_id)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/auth/signin?reason=signed_out")
    assert "You have signed out" in here.get(urljoin(portal.url, response.headers["Location"]), timeout=10).text
    assert api_status(here, portal.url) == 401
    assert here.get(portal.url + "/messages", allow_redirects=False, timeout=10).status_code == 302

    # The other browser is untouched, and its list no longer shows the ended session.
    assert api_status(elsewhere, portal.url) == 200
    assert set(my_sessions(elsewhere, portal.url)[0]) == {elsewhere_id}

    revoked = [row for row in audit_rows(portal.database, action="session.revoked")
               if row["resource_id"] == here_id]
    assert len(revoked) == 1 and revoked[0]["actor_id"] == reyes and revoked[0]["outcome"] == "allowed"
    assert '"this_session":true' in revoked[0]["details"].replace(" ", "")


def test_an_unknown_or_someone_elses_session_cannot_be_ended(portal: InProcessPortal) -> None:
    nora = signed_in(portal.url, "nora", FIREFOX_ON_WINDOWS)
    other = signed_in(portal.url, "bob", SAFARI_ON_IPHONE)
    nora_id, other_id = this_session_id(nora, portal.url), this_session_id(other, portal.url)
    token = csrf_token(nora, portal.url + "/auth/sessions")

    for target in (str(uuid.uuid4()), other_id):
        refused = nora.post(f"{portal.url}/auth/sessions/{target}/end", data={"csrf_token": token},
                            allow_redirects=False, timeout=10)
        assert refused.status_code == 404
        assert 'data-error-code="no_such_session"' in refused.text

    # Nothing ended: both people are still signed in, with the same sessions.
    assert api_status(nora, portal.url) == 200 and api_status(other, portal.url) == 200
    assert nora_id in my_sessions(nora, portal.url)[0] and other_id in my_sessions(other, portal.url)[0]
    assert not [row for row in audit_rows(portal.database, action="session.revoked")
                if row["resource_id"] in {nora_id, other_id}]


def test_ending_a_session_without_the_csrf_token_is_refused(portal: InProcessPortal) -> None:
    here = signed_in(portal.url, "cora", FIREFOX_ON_WINDOWS)
    there = signed_in(portal.url, "cora", SAFARI_ON_IPHONE)
    there_id = this_session_id(there, portal.url)
    action = my_sessions(here, portal.url)[0][there_id].end_action

    for data in ({}, {"csrf_token": "forged"}):
        refused = here.post(urljoin(portal.url, action), data=data, allow_redirects=False, timeout=10)
        assert refused.status_code == 400
        assert 'data-error-code="csrf"' in refused.text

    assert api_status(there, portal.url) == 200
    assert there_id in my_sessions(here, portal.url)[0]

    # The same press with the page's token works (so the refusal was about CSRF alone).
    assert end_from_list(here, portal.url, there_id).status_code == 302
    assert api_status(there, portal.url) == 401


def test_the_database_holds_no_plaintext_address_or_user_agent(portal: InProcessPortal) -> None:
    probe = f"Mozilla/5.0 (X11; Linux x86_64) SessionProbe/{uuid.uuid4().hex}"
    session = signed_in(portal.url, "adam", probe)
    session_id = this_session_id(session, portal.url)
    row = my_sessions(session, portal.url)[0][session_id]
    assert row.address == "127.0.0.1"  # the portal stored and can read both ...
    assert_stored_encrypted(portal.database, session_id, probe)  # ... but only encrypted


def test_only_administrators_see_and_end_other_peoples_sessions(portal: InProcessPortal) -> None:
    target = signed_in(portal.url, "dr.okafor", FIREFOX_ON_WINDOWS)
    target_id = user_id(target, portal.url)
    admin = signed_in(portal.url, "adam", FIREFOX_ON_WINDOWS)
    listing = admin.get(portal.url + "/admin/sessions", timeout=10)
    assert listing.status_code == 200 and f'data-user="{target_id}"' in listing.text

    for login in ("dr.chen", "nora"):
        other = signed_in(portal.url, login, FIREFOX_ON_WINDOWS)
        other_id = user_id(other, portal.url)
        assert other.get(portal.url + "/admin/sessions", timeout=10).status_code == 403
        token = csrf_token(other, portal.url + "/auth/sessions")
        refused = other.post(f"{portal.url}/admin/users/{target_id}/sessions/end", data={"csrf_token": token},
                             allow_redirects=False, timeout=10)
        assert refused.status_code == 403
        denied = audit_rows(portal.database, action="admin.sessions", actor_id=other_id)
        assert [row["outcome"] for row in denied] == ["denied", "denied"]

    assert api_status(target, portal.url) == 200
    assert not [row for row in audit_rows(portal.database, action="session.revoked")
                if target_id in (row["details"] or "")]


# --- across two workers (PostgreSQL and Redis) ------------------------------------------------------------------

@pytest.mark.postgres
@pytest.mark.redis
def test_ending_another_session_cuts_it_on_every_worker(workers: Workers) -> None:
    laptop = signed_in(workers.a.url, "alice", FIREFOX_ON_WINDOWS)
    phone = signed_in(workers.a.url, "alice", SAFARI_ON_IPHONE)
    alice = user_id(laptop, workers.a.url)
    phone_id = this_session_id(phone, workers.b.url)
    # The phone has chat windows on both workers; the laptop ends the phone's session on worker A.
    chats = [WatchedChat(workers.b.url, phone, origin=workers.a.url).connect(),
             WatchedChat(workers.a.url, phone).connect()]
    laptop_chat = WatchedChat(workers.b.url, laptop, origin=workers.a.url).connect()
    for chat in (*chats, laptop_chat):
        chat.wait_for("unread")
    try:
        assert my_sessions(laptop, workers.a.url)[0][phone_id].device == IPHONE_DEVICE
        response = end_from_list(laptop, workers.a.url, phone_id)
        ended_at = time.monotonic()
        assert response.status_code == 302 and response.headers["Location"] == "/auth/sessions"
        assert "That session has ended" in laptop.get(workers.a.url + "/auth/sessions", timeout=10).text

        for chat in chats:
            assert_told_and_cut(chat, ended_at)
        # The laptop's own chat window is neither told nor cut: the server still answers it.
        assert laptop_chat.sio.connected and not laptop_chat.received("session_ended")
        assert isinstance(laptop_chat.call("join", {"conversation_id": str(uuid.uuid4())}), dict)
    finally:
        for chat in (*chats, laptop_chat):
            chat.close()

    for url in (workers.a.url, workers.b.url):
        assert_page_goes_to_sign_in(same_cookies(phone), url, "revoked")
        api = same_cookies(phone).get(url + "/api/v1/me", timeout=10)
        assert api.status_code == 401 and api.json()["error"]["code"] == "revoked"
    signin = phone.get(workers.b.url + "/auth/signin?reason=revoked", timeout=10).text
    assert "This session was ended from your session list" in signin
    assert_chat_refused(workers.b.url, same_cookies(phone), origin=workers.a.url)

    # The laptop carries on; its list shows only itself now.
    assert api_status(laptop, workers.b.url) == 200
    assert phone_id not in my_sessions(laptop, workers.b.url)[0]

    revoked = audit_rows(workers.database_url, action="session.revoked", resource_id=phone_id)
    assert len(revoked) == 1
    assert revoked[0]["actor_id"] == alice and revoked[0]["outcome"] == "allowed"
    assert '"this_session":false' in revoked[0]["details"].replace(" ", "")
    assert_stored_encrypted(workers.database_url, phone_id, SAFARI_ON_IPHONE)


@pytest.mark.postgres
@pytest.mark.redis
def test_an_administrator_ends_all_sessions_of_a_user_at_once(workers: Workers) -> None:
    desk = signed_in(workers.a.url, "dr.chen", FIREFOX_ON_WINDOWS)
    phone = signed_in(workers.a.url, "dr.chen", SAFARI_ON_IPHONE)
    chen = user_id(desk, workers.a.url)
    chat = WatchedChat(workers.b.url, phone, origin=workers.a.url).connect()
    chat.wait_for("unread")
    admin = signed_in(workers.a.url, "adam", FIREFOX_ON_WINDOWS)
    adam = user_id(admin, workers.a.url)
    try:
        listing = admin.get(workers.a.url + "/admin/sessions", timeout=10).text
        row = re.search(rf'<tr data-user="{chen}">(.*?)</tr>', listing, re.S)
        assert row, "dr.chen is not on the administrator's list"
        assert "Dr. Mei Chen" in row.group(1) and "<td>2</td>" in row.group(1)
        action = re.search(r'action="([^"]+)"', row.group(1)).group(1)
        assert action == f"/admin/users/{chen}/sessions/end"

        token = re.search(r'name="csrf_token" value="([^"]+)"', listing).group(1)
        response = admin.post(urljoin(workers.a.url, action), data={"csrf_token": token}, allow_redirects=False,
                              timeout=10)
        ended_at = time.monotonic()
        assert response.status_code == 302 and response.headers["Location"] == "/admin/sessions"

        assert_told_and_cut(chat, ended_at)
    finally:
        chat.close()

    for session in (desk, phone):
        for url in (workers.a.url, workers.b.url):
            assert api_status(same_cookies(session), url) == 401
            assert_page_goes_to_sign_in(same_cookies(session), url, "revoked")
    assert_chat_refused(workers.b.url, same_cookies(phone), origin=workers.a.url)
    after = admin.get(workers.a.url + "/admin/sessions", timeout=10).text
    assert "Ended 2 session(s) of Dr. Mei Chen" in after
    assert f'data-user="{chen}"' not in after

    revoked = audit_rows(workers.database_url, action="session.revoked", actor_id=adam)
    assert len(revoked) == 1 and revoked[0]["outcome"] == "allowed" and revoked[0]["resource_id"] == chen
    details = revoked[0]["details"].replace(" ", "")
    assert f'"user":"{chen}"' in details and '"sessions":2' in details
