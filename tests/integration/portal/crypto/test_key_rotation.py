"""Key rotation from the command line while the portal keeps serving charts and taking notes."""
import re
import threading

import pytest

from tests.support.environment import free_port
from tests.support.portal_server import PortalServer, flask_command, portal_env, prepare_database, sign_in
from tests.support.seed import ALICE


def key_counts(output, title):
    section = output.split(title + ":")[1].split(":\n")[0]
    return {k: int(v) for k, v in re.findall(r"^\s+(\S+): (\d+) values", section, re.M)}


@pytest.mark.slow
def test_rotation_is_online_and_leaves_nothing_under_the_old_key(database_url, tmp_path):
    port = free_port()
    env = portal_env(tmp_path, database_url, port)
    prepare_database(env, patients=20)
    rotated = tmp_path / "keyring-2.json"
    flask_command(env, "new-key", str(rotated))
    env["PORTAL_KEYRING"] = str(rotated)
    before = key_counts(flask_command(env, "rotate-keys", "--check"), "encryption keys")
    assert before["k1"] > 500 and before["k2"] == 0

    with PortalServer(env, port, tmp_path / "server.log"):
        session = sign_in(f"http://127.0.0.1:{port}", "dr.chen")
        chart_url = f"http://127.0.0.1:{port}/patients/{ALICE}"
        failures, stop = [], threading.Event()

        def keep_working():
            written = 0
            while not stop.is_set():
                page = session.get(chart_url, timeout=10)
                if page.status_code != 200 or "Alice Moreau" not in page.text:
                    failures.append(page.status_code)
                token = re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)
                written += 1
                note = session.post(chart_url + "/notes", timeout=10,
                                    data={"csrf_token": token, "title": f"during rotation {written}", "text": "ok"})
                if note.status_code != 200:
                    failures.append(note.status_code)

        worker = threading.Thread(target=keep_working)
        worker.start()
        try:
            output = flask_command(env, "rotate-keys", "--batch-size", "50")
        finally:
            stop.set()
            worker.join()
        assert failures == []
        assert "during rotation 1" in session.get(chart_url, timeout=10).text

    after = key_counts(output, "encryption keys")
    assert after["k1"] == 0 and after["k2"] >= before["k1"]
    assert key_counts(output, "blind-index keys")["i1"] == 0
    assert "re-encrypted" in output
