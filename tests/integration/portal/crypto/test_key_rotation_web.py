"""Re-encryption under a new primary key, started by an administrator from the web console.

The data is seeded under one keyring; the portal is then started with a keyring whose primary is a
new key (as an operator deploys it with `flask new-key`). The administrator sees how many values
each key still protects, has to sign in again before starting the re-encryption, and watches the
old key's count fall to zero. The fresh sign-in is good for one start only. Runs on SQLite and
PostgreSQL.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tests.support.audit_log import audit_rows
from tests.support.environment import free_port
from tests.support.npm_idp import stop_portals
from tests.support.portal_server import (
    PortalServer,
    csrf_token,
    flask_command,
    portal_env,
    prepare_database,
    sign_in,
    sign_in_again,
)
from tests.support.seed import ALICE
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow  # started first (tests/conftest.py): one of the suite's longest modules

ROTATION_TIMEOUT = 30  # seconds for a handful of patients; generous for a loaded machine


class Deployment:
    def __init__(self, server: PortalServer, old: dict, new: dict):
        self.server, self.url = server, server.url
        self.old_key, self.old_index_key = old["primary"], old["index_primary"]
        self.new_key, self.new_index_key = new["primary"], new["index_primary"]
        self.database_url = server.env["PORTAL_DATABASE_URL"]


@pytest.fixture
def deployment(database_url: str, tmp_path: Path) -> Iterator[Deployment]:
    """Seeded under the first keyring, then served with a keyring whose primary key is new."""
    port = free_port()
    env = portal_env(tmp_path, database_url, port)
    prepare_database(env, patients=4)
    first, second = Path(env["PORTAL_KEYRING"]), tmp_path / "keyring-2.json"
    flask_command(env, "new-key", str(second))
    env["PORTAL_KEYRING"] = str(second)
    server = PortalServer(env, port, tmp_path / "server.log").start()
    try:
        yield Deployment(server, json.loads(first.read_text()), json.loads(second.read_text()))
    finally:
        stop_portals(server)


def key_page(session: requests.Session, url: str) -> tuple[dict[str, int], str]:
    """Values protected per key id (encryption and blind-index keys) as the keys page shows them."""
    page = session.get(url + "/admin/keys", allow_redirects=False, timeout=10)
    assert page.status_code == 200, page.status_code
    counts = {key: int(n) for key, n in re.findall(r'<tr data-key="([^"]+)">.*?<td data-count="(\d+)">', page.text, re.S)}
    assert counts, "the keys page lists no keys"
    return counts, page.text


def press_rotate(session: requests.Session, url: str, **kwargs) -> requests.Response:
    page = key_page(session, url)[1]
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    return session.post(url + "/admin/keys/rotate", data={"csrf_token": token}, timeout=10, **kwargs)


def assert_sent_to_step_up(response: requests.Response) -> None:
    """The rotate button led to /auth/step-up for key rotation, and on to the provider with max_age."""
    step_up = [r for r in response.history if r.headers.get("Location", "").startswith("/auth/step-up")]
    assert step_up, f"rotate did not ask for a fresh sign-in: {[r.headers.get('Location') for r in response.history]}"
    query = parse_qs(urlsplit(step_up[0].headers["Location"]).query)
    assert query.keys() == {"action", "next", "token"}  # the token: this browser session's own link
    assert query["action"] == ["key_rotation"] and query["next"] == ["/admin/keys"]
    assert "/devidp/authorize" in response.url and "max_age=" in response.url


def rotation_audit(deployment: Deployment, action: str) -> list[dict]:
    rows = audit_rows(deployment.database_url, action=action)
    for row in rows:
        row["details"] = json.loads(row["details"])
    return rows


def test_administrator_re_encrypts_after_signing_in_again(deployment: Deployment) -> None:
    url = deployment.url
    adam = sign_in(url, "adam")
    adam_id = adam.get(url + "/api/v1/me", timeout=10).json()["id"]

    before, page = key_page(adam, url)
    assert before[deployment.old_key] > 0 and before[deployment.old_index_key] > 0
    assert deployment.new_key in before and deployment.new_index_key in before
    assert 'id="step-up-confirmed"' not in page

    # Without a fresh sign-in the button leads to the provider's sign-in form; nothing is rewritten.
    asked = press_rotate(adam, url)
    assert_sent_to_step_up(asked)
    assert not rotation_audit(deployment, "keys.rotation_started")
    back = sign_in_again(adam, asked, "adam")
    assert back.status_code == 200 and urlsplit(back.url).path == "/admin/keys"
    assert 'id="step-up-confirmed"' in back.text
    counts, _ = key_page(adam, url)
    assert counts[deployment.old_key] == before[deployment.old_key]

    started = press_rotate(adam, url)
    assert started.status_code == 200 and urlsplit(started.url).path == "/admin/keys"
    assert "Re-encryption started" in started.text

    after = wait_until(lambda: (c := key_page(adam, url)[0])[deployment.old_key] == 0
                       and c[deployment.old_index_key] == 0 and c, ROTATION_TIMEOUT, "the old keys' counts to reach 0",
                       interval=0.25)
    assert after[deployment.new_key] >= before[deployment.old_key]
    done = wait_until(lambda: rotation_audit(deployment, "keys.rotated"), ROTATION_TIMEOUT,
                      "the keys.rotated audit entry", interval=0.25)

    [start] = rotation_audit(deployment, "keys.rotation_started")
    assert start["actor_id"] == adam_id and start["outcome"] == "allowed"
    assert start["details"]["step_up"] == "key_rotation"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", start["details"]["step_up_auth_time"])
    [finished] = done
    assert finished["actor_id"] == adam_id and finished["outcome"] == "allowed"
    assert finished["details"]["step_up"] == "key_rotation"
    assert finished["details"]["step_up_auth_time"] == start["details"]["step_up_auth_time"]
    assert finished["details"]["reencrypted"] >= before[deployment.old_key]
    assert finished["details"]["reindexed"] > 0 and finished["details"]["rows"] > 0

    # The data is still readable under the new key, the sign-in sessions' devices and addresses too.
    assert "127.0.0.1" in adam.get(url + "/auth/sessions", timeout=10).text
    chen = sign_in(url, "dr.chen")
    chart = chen.get(f"{url}/patients/{ALICE}", timeout=10)
    assert chart.status_code == 200 and "Alice Moreau" in chart.text

    # The fresh sign-in was good for one start: the next press asks again.
    assert 'id="step-up-confirmed"' not in key_page(adam, url)[1]
    again = press_rotate(adam, url, allow_redirects=False)
    assert again.status_code == 302 and again.headers["Location"].startswith("/auth/step-up?action=key_rotation")
    assert len(rotation_audit(deployment, "keys.rotation_started")) == 1


def test_only_administrators_manage_keys(deployment: Deployment) -> None:
    url = deployment.url
    for login in ("dr.chen", "cora", "nora"):
        other = sign_in(url, login)
        other_id = other.get(url + "/api/v1/me", timeout=10).json()["id"]
        assert other.get(url + "/admin/keys", allow_redirects=False, timeout=10).status_code == 403
        token = csrf_token(other, url + "/auth/sessions")
        refused = other.post(url + "/admin/keys/rotate", data={"csrf_token": token}, allow_redirects=False, timeout=10)
        assert refused.status_code == 403  # refused outright, not sent to sign in again
        denied = audit_rows(deployment.database_url, action="admin.keys", actor_id=other_id)
        assert [row["outcome"] for row in denied] == ["denied", "denied"]
    assert not rotation_audit(deployment, "keys.rotation_started")
    admin = sign_in(url, "adam")
    assert key_page(admin, url)[0][deployment.old_key] > 0
