"""The portal's own integrity check (console and `flask audit-verify`) catches a tail deleted from the log, and
the proofs it hands compliance officers check offline."""
import json
import subprocess
import sys

import pytest
import sqlalchemy as sa

from audit import audit_tree_node, remove_append_only_guard
from audit.tree import build_tree
from tests.support.portal_server import flask_command, running_portal, sign_in


def test_deleting_the_tail_of_the_log_is_reported_as_truncation(tmp_path):
    with running_portal(tmp_path, f"sqlite:///{tmp_path / 'portal.db'}", patients=2,
                        PORTAL_AUDIT_CHECKPOINT_EVERY="5") as portal:
        chen = sign_in(portal.url, "dr.chen")
        for _ in range(12):
            chen.get(portal.url + "/clinician", timeout=10)
        env = portal.env
    assert "OK" in flask_command(env, "audit-verify")

    engine = sa.create_engine(env["PORTAL_DATABASE_URL"])
    with engine.begin() as conn:
        remove_append_only_guard(conn)  # an attacker with database access can do this too
        last_signed = conn.execute(sa.text("SELECT max(tree_size) FROM audit_tree_checkpoint")).scalar_one()
        conn.execute(sa.text("DELETE FROM audit_entry WHERE seq > :keep"), {"keep": last_signed - 3})
        conn.execute(audit_tree_node.delete())  # and the Merkle tree, rebuilt over what is left
        build_tree(conn)
    engine.dispose()
    with pytest.raises(RuntimeError, match="truncated"):
        flask_command(env, "audit-verify")  # exits 1, which flask_command raises as RuntimeError


def _check_offline(tmp_path, command: str, document: dict, *trusted: str) -> subprocess.CompletedProcess:
    path = tmp_path / f"{command}.json"
    path.write_text(json.dumps(document))
    return subprocess.run([sys.executable, "-m", "audit", command, str(path), *trusted], capture_output=True,
                          text=True, timeout=60)


def test_a_compliance_officer_gets_proofs_that_check_offline_and_fail_when_edited(tmp_path):
    with running_portal(tmp_path, f"sqlite:///{tmp_path / 'portal.db'}", patients=2) as portal:
        cora, chen = sign_in(portal.url, "cora"), sign_in(portal.url, "dr.chen")
        for _ in range(6):
            chen.get(portal.url + "/clinician", timeout=10)
        proofs = portal.url + "/compliance/api/proofs/"
        older = cora.get(proofs + "inclusion", params={"index": 2, "size": 5}, timeout=10).json()
        later = cora.get(proofs + "consistency", params={"old": 5}, timeout=10).json()
        assert older["tree_size"] == 5 and older["entry"]["seq"] == 3 and later["tree_size_1"] == 5
        head = f"{later['tree_size_1']}:{later['root_hash_1']}"
        assert _check_offline(tmp_path, "check-inclusion", older, "--tree", head).returncode == 0
        assert _check_offline(tmp_path, "check-consistency", later, "--old", head).returncode == 0
        edited = {**older, "entry": {**older["entry"], "event": {**older["entry"]["event"], "actor_id": "nobody"}}}
        assert _check_offline(tmp_path, "check-inclusion", edited, "--tree", head).returncode == 1

        assert cora.get(proofs + "inclusion", params={"index": "x"}, timeout=10).status_code == 400
        assert cora.get(proofs + "inclusion", params={"index": 99, "size": 100000}, timeout=10).status_code == 400
        assert chen.get(proofs + "consistency", params={"old": 1}, timeout=10).status_code == 403
        engine = sa.create_engine(portal.env["PORTAL_DATABASE_URL"])
        with engine.connect() as conn:
            asked = conn.execute(sa.text("SELECT outcome, details FROM audit_entry WHERE action = 'audit.read' "
                                         "AND details LIKE '%proof%' ORDER BY seq")).all()
        engine.dispose()
        assert [outcome for outcome, _ in asked].count("allowed") >= 3 and "denied" in {o for o, _ in asked}
