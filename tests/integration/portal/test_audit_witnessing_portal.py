"""A real portal (run.py) and a real witness (`python -m audit witness`) as separate processes, on
PostgreSQL: the log's checkpoints are cosigned in the background and the cosignature kept; the
witness's memory then catches what the database alone cannot: a tail deleted with its checkpoints, or
emptied audit tables. A witness that goes away never stops the portal: chart reads still answer, the
failure metric rises, the Integrity page warns, and /readyz fails only once the lag exceeds its bound.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from audit import (
    audit_entry,
    audit_tree_checkpoint,
    audit_tree_cosignature,
    audit_tree_node,
    load_signing_key,
)
from audit.note import NoteSigner, Verifier
from audit.tree import build_tree
from audit.witnessed import fetch_witnessed
from tests.support.audit_log import (
    ORIGIN,
    audit_head,
    console_verify_now,
    flask_audit_verify,
    superuser_tampering,
    witnessed_everything,
    witnessed_portal,
)
from tests.support.environment import ROOT
from tests.support.portal_server import PortalServer, another_worker, sign_in
from tests.support.seed import ALICE
from tests.support.waiting import wait_until
from tests.support.witness_process import WitnessProcess

pytestmark = pytest.mark.slow  # started first (tests/conftest.py): one of the suite's longest modules

ENTRIES = 270
KEPT = 200
WAIT_SECONDS = 60
METRICS = {"Authorization": "Bearer test-metrics-token"}


@pytest.fixture
def database_url(postgres_url: str) -> str:
    """On PostgreSQL, as production runs; what the store does on each database is specified by
    tests/integration/audit/test_audit_tree_checkpoints.py and test_audit_witness.py, on SQLite and PostgreSQL."""
    return postgres_url


def _read_charts_until(portal: PortalServer, entries: int) -> None:
    clinician = sign_in(portal.url, "dr.chen")
    while audit_head(portal) < entries:
        for _ in range(25):
            assert clinician.get(f"{portal.url}/api/v1/patients/{ALICE}/results", timeout=10).status_code == 200


def _log_verifier(portal: PortalServer) -> Verifier:
    return NoteSigner(ORIGIN, load_signing_key(portal.env["PORTAL_AUDIT_SIGNING_KEY"])).verifier


def _remembered(portal: PortalServer, witness: WitnessProcess) -> int:
    """The size the witness itself last cosigned (the portal may have had one more entry cosigned)."""
    return fetch_witnessed(witness.url, _log_verifier(portal), witness.verifier).checkpoint.size


def _cli_verify(portal: PortalServer, witness: WitnessProcess) -> subprocess.CompletedProcess:
    log_key = _log_verifier(portal).vkey()
    public_key = Path(portal.env["PORTAL_AUDIT_SIGNING_KEY"]).with_name("audit-public-key.pem")
    public_key.write_bytes(load_signing_key(portal.env["PORTAL_AUDIT_SIGNING_KEY"]).verify_key.to_pem())
    return subprocess.run([sys.executable, "-m", "audit", "verify", "--db", portal.env["PORTAL_DATABASE_URL"],
                           "--public-key", str(public_key), "--witness-url", witness.url,
                           "--witness-key", witness.verifier.vkey(), "--log-key", log_key],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def _delete_tail(conn: sa.Connection, keep: int) -> None:
    """What an owner of the database does to forget the newest entries: every trace of them, gone."""
    conn.execute(audit_entry.delete().where(audit_entry.c.seq > keep))
    conn.execute(audit_tree_checkpoint.delete().where(audit_tree_checkpoint.c.tree_size > keep))
    conn.execute(audit_tree_cosignature.delete().where(audit_tree_cosignature.c.tree_size > keep))
    conn.execute(audit_tree_node.delete())
    assert build_tree(conn) == keep


def _assert_verifiers_report_truncation(portal: PortalServer, witness: WitnessProcess, witnessed: int, held: int):
    expected = f"truncated: the witness cosigned {witnessed} entries, the log holds {held}"
    cli = _cli_verify(portal, witness)  # first: `flask audit-verify` records its result, one entry more
    assert cli.returncode == 1, cli.stdout + cli.stderr
    assert cli.stdout.startswith("FAILED: truncated") and expected in cli.stdout, cli.stdout + cli.stderr
    flask = flask_audit_verify(portal)
    assert flask.returncode == 1, flask.stdout + flask.stderr
    assert flask.stdout.startswith("FAILED: truncated") and expected in flask.stdout, flask.stdout


def test_a_tail_deleted_with_its_checkpoints_is_caught_by_the_witness(database_url, tmp_path):
    with witnessed_portal(tmp_path, database_url) as (portal, witness):
        _read_charts_until(portal, ENTRIES)
        witnessed = witnessed_everything(portal)
        assert witnessed >= ENTRIES
        ok = flask_audit_verify(portal)
        assert ok.returncode == 0 and f"the log holds the {witnessed} entries it cosigned" in ok.stdout, ok.stdout
        alice = sign_in(portal.url, "alice")
        _assert_report_is_witnessed(portal, witness, alice, tmp_path / "report.json")
        portal.stop()  # the attacker works on a quiet database
        with superuser_tampering(portal.env["PORTAL_DATABASE_URL"]) as conn:
            _delete_tail(conn, KEPT)
        remembered = _remembered(portal, witness)
        _assert_verifiers_report_truncation(portal, witness, remembered, KEPT)
        portal.start()  # the console, too, after the portal has gone on appending over the cut
        page = console_verify_now(portal, sign_in(portal.url, "cora"))
        assert 'data-integrity="failed"' in page and f"the witness cosigned {remembered} entries" in page
        refused = sign_in(portal.url, "alice").get(f"{portal.url}/api/v1/patients/{ALICE}/disclosures", timeout=60)
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "audit_log_unverified", refused.text


def _assert_report_is_witnessed(portal: PortalServer, witness: WitnessProcess, alice, path: Path) -> None:
    """Alice's accounting of disclosures is proven against a checkpoint the witness cosigned, and checks offline
    with the log's and the witness's keys alone."""
    report = alice.get(f"{portal.url}/api/v1/patients/{ALICE}/disclosures", timeout=60)
    assert report.status_code == 200, report.text
    proof = report.json()["proof"]
    assert proof["witness_keys"] == [witness.verifier.vkey()] and proof["tree_size"] >= ENTRIES
    assert len(proof["entries"]) == report.json()["count"] >= 25
    path.write_bytes(report.content)
    checked = subprocess.run([sys.executable, "-m", "audit", "verify-report", str(path), "--log-key",
                              _log_verifier(portal).vkey(), "--witness-key", witness.verifier.vkey()],
                             cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and "cosigned by 1 witness(es): witness.test/w1" in checked.stdout, checked.stderr


def test_emptied_audit_tables_are_caught_by_the_witness(database_url, tmp_path):
    with witnessed_portal(tmp_path, database_url) as (portal, witness):
        _read_charts_until(portal, 40)
        assert witnessed_everything(portal) >= 40
        portal.stop()
        with superuser_tampering(portal.env["PORTAL_DATABASE_URL"]) as conn:
            for table in (audit_entry, audit_tree_node, audit_tree_checkpoint, audit_tree_cosignature):
                conn.execute(table.delete())
        _assert_verifiers_report_truncation(portal, witness, _remembered(portal, witness), 0)


def _failures(portal: PortalServer) -> float:
    text = requests.get(f"{portal.url}/metrics", headers=METRICS, timeout=10).text
    line = next(line for line in text.splitlines() if line.startswith("portal_audit_witness_failures_total "))
    return float(line.split()[1])


def _witness_check(portal: PortalServer) -> tuple[int, str]:
    ready = requests.get(f"{portal.url}/readyz", timeout=10)
    return ready.status_code, ready.json()["checks"]["audit_witness"]


def test_a_stopped_witness_never_stops_the_portal_and_fails_readiness_only_past_the_bound(database_url, tmp_path):
    with witnessed_portal(tmp_path, database_url, PORTAL_AUDIT_WITNESS_MAX_LAG_SECONDS="3600") as (portal, witness):
        _read_charts_until(portal, 20)
        witnessed_everything(portal)
        assert _witness_check(portal) == (200, "ok")
        witness.stop()
        _read_charts_until(portal, audit_head(portal) + 30)  # every read still answered (asserted inside)
        wait_until(lambda: _failures(portal) > 0, WAIT_SECONDS, "the failure counter to rise", interval=0.2)
        assert _witness_check(portal) == (200, "ok")  # far within the hour's bound
        cora = sign_in(portal.url, "cora")
        page = cora.get(f"{portal.url}/compliance/integrity", timeout=10)
        assert page.status_code == 200 and 'data-witness="warning"' in page.text
        shown = f'data-testid="log-verifier-key">{_log_verifier(portal).vkey()}</code>'
        assert shown in page.text  # the key the witness was started with, published for auditors

        strict = another_worker(portal)
        strict.env = {**portal.env, "PORTAL_AUDIT_WITNESS_MAX_LAG_SECONDS": "1"}
        with strict:
            wait_until(lambda: _witness_check(strict) == (503, "failed"), WAIT_SECONDS,
                       "readiness to fail past the 1 s bound", interval=0.2)
            clinician = sign_in(strict.url, "dr.chen")
            assert clinician.get(f"{strict.url}/api/v1/patients/{ALICE}/results", timeout=10).status_code == 200
            witness.start()
            wait_until(lambda: _witness_check(strict) == (200, "ok"), WAIT_SECONDS,
                       "readiness to recover once the witness cosigns", interval=0.2)
