"""The portal's own integrity check (console and `flask audit-verify`) catches a tail deleted from the log."""
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
        last_signed = conn.execute(sa.text("SELECT max(count) FROM audit_checkpoint")).scalar_one()
        conn.execute(sa.text("DELETE FROM audit_entry WHERE seq > :keep"), {"keep": last_signed - 3})
        conn.execute(audit_tree_node.delete())  # and the Merkle tree, rebuilt over what is left
        build_tree(conn)
    engine.dispose()
    with pytest.raises(RuntimeError, match="truncated"):
        flask_command(env, "audit-verify")  # exits 1, which flask_command raises as RuntimeError
