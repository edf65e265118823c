"""Hostile review of the accounting of disclosures' proofs (portal/disclosures/service.py): when a report is
refused although the log is intact, and when it is issued with less proof than the witness could give.

In process on SQLite (tests/support/harness.py), one rolled-back transaction per test."""
from __future__ import annotations

from audit import AuditEvent, SigningKey
from audit.note import ALG_COSIGNATURE_V1, Checkpoint, Note, NoteSigner
from audit.witness_client import Cosigned, WitnessRefused, WitnessUnreachable
from portal import services, witnessing
from tests.support.seed import ALICE


def _grow_past_the_next_multiple(app) -> int:
    """Append one batch that carries the log past its next multiple of checkpoint_every, as group commit does."""
    with app.app_context():
        store = services.audit_store()
        size, every = store.tree_size(), store.checkpoint_every
        store.append_many(AuditEvent(action="chart.read", outcome="allowed", patient_id="someone-else")
                          for _ in range(every - size % every + 1))
        return store.tree_size() // every * every


def test_a_report_is_issued_once_the_log_has_passed_a_multiple_of_checkpoint_every(app, login_as):
    """A report requires a tree checkpoint of exactly the last multiple of PORTAL_AUDIT_CHECKPOINT_EVERY: the append
    that carries the log past it signs one of that size in its transaction, even inside one batch, so an intact log
    of 101+ entries is reported on (not refused with "checkpoint missing at tree size 100")."""
    anchor = _grow_past_the_next_multiple(app)
    with app.app_context():
        assert services.audit_store().tree_checkpoint_of_size(anchor) is not None, "signed at the multiple"
    response = login_as("alice").get(f"/api/v1/patients/{ALICE}/disclosures")
    assert response.status_code == 200, response.text


WITNESS = NoteSigner("witness.test/w1", SigningKey.generate(), ALG_COSIGNATURE_V1)


def _cosigning_while_the_log_grows(app):
    """A healthy witness that cosigns at once; meanwhile another request appends an audit entry."""
    def post(url, note, old, proof, witness):
        parsed = Note.parse(note)
        signature = WITNESS.sign(parsed.text, timestamp=1_780_000_000)
        with app.app_context():
            services.audit_store().append(AuditEvent(action="chart.read", outcome="allowed", patient_id="someone-else"))
        return Cosigned(Checkpoint.parse(parsed.text), signature, 1_780_000_000, parsed.with_signatures([signature]).encode())
    return post


def test_a_healthy_witness_cosigns_the_report_even_when_the_log_grows_meanwhile(app, login_as, monkeypatch):
    """On a busy portal every request appends, so the log is almost never still at the size just cosigned: the
    report then falls back to a checkpoint signed by the log alone ("witnessed": false) with the witness healthy.
    The cosigned checkpoint covers every entry it names, so the report could be proven against it."""
    with app.app_context():
        submitter = witnessing.Submitter(services.audit_store(), "http://witness.invalid", WITNESS.verifier,
                                         post=_cosigning_while_the_log_grows(app))
    monkeypatch.setitem(app.extensions, witnessing.SUBMITTER, submitter)
    report = login_as("alice").get(f"/api/v1/patients/{ALICE}/disclosures")
    assert report.status_code == 200, report.text
    assert report.json()["proof"]["witness_keys"] == [WITNESS.vkey()], "the report was proven against the log alone"


def _answers(*outcomes: Exception):
    """A witness that answers each submission with the next of `outcomes` (all refusals or failures)."""
    queue = list(outcomes)

    def post(url, note, old, proof, witness):
        raise queue.pop(0)
    return post


def test_a_witness_refusal_is_not_forgotten_when_the_witness_then_stops_answering(app, login_as, monkeypatch):
    """The witness refused the log's checkpoint (it went back on what was cosigned): reports stop. If the witness
    is then unreachable for one round (an attacker who rewrote the log only has to block it), the refusal is
    forgotten and reports are issued again, against the log's own signature."""
    with app.app_context():
        store = services.audit_store()
        store.append(AuditEvent(action="chart.read", outcome="allowed", patient_id="someone-else"))
        submitter = witnessing.Submitter(store, "http://witness.invalid", WITNESS.verifier, post=_answers(
            WitnessRefused(403, "inconsistent with the checkpoint it cosigned"), WitnessUnreachable("timed out")))
        monkeypatch.setitem(app.extensions, witnessing.SUBMITTER, submitter)
        assert submitter.submit(sign_now=True).refused
    alice = login_as("alice")
    assert alice.get(f"/api/v1/patients/{ALICE}/disclosures").status_code == 409
    with app.app_context():
        refusal = store.head_seq()
        assert next(store.iter_entries(after_seq=refusal - 1)).event.details["problem"] == "witness_refused"
        store.append(AuditEvent(action="chart.read", outcome="allowed", patient_id="someone-else"))
        assert not submitter.submit(sign_now=True).ok  # the background round: unreachable now
    assert alice.get(f"/api/v1/patients/{ALICE}/disclosures").status_code == 409


def test_a_report_refused_by_the_rate_limit_is_audited(app, login_as, configure):
    """Every other refusal of a report is an audit entry; the per-person limit's 429 is not."""
    configure(report_rate_limit="1 per minute")
    alice = login_as("alice")
    for _ in range(2):  # the first may already be over the limit when an earlier test asked within the minute
        with app.app_context():
            before = services.audit_store().head_seq()
        status = alice.get(f"/api/v1/patients/{ALICE}/disclosures").status_code
        if status == 429:
            break
    assert status == 429
    with app.app_context():
        refused = [entry.event for entry in services.audit_store().iter_entries(after_seq=before)]
    assert [event for event in refused if event.outcome == "denied"], "the 429 left no audit entry"
