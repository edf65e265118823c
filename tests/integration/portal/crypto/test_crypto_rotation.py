"""Key rotation on real SQLite and PostgreSQL: status in SQL, online CAS rewrites, resumption."""
from __future__ import annotations

import datetime
import random
import threading
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from portal.crypto import (
    Keyring,
    blind_index_terms,
    install_keyring,
    rotate,
    rotation_status,
)
from portal.crypto.registry import model_spec
from portal.crypto.rotation import RotationSummary, _rotate_row, raw_table
from tests.support.encrypted_chart import Chart, chart_database, installed_keyring

ROWS = 40


@pytest.fixture
def old_ring() -> Iterator[Keyring]:
    with installed_keyring() as ring:
        yield ring


@pytest.fixture
def engine(database_url: str, old_ring: Keyring) -> Iterator[sa.Engine]:
    with chart_database(database_url, **({"timeout": 30} if database_url.startswith("sqlite") else {})) as engine:
        yield engine


@pytest.fixture
def sessions(engine: sa.Engine) -> sessionmaker[Session]:
    return sessionmaker(engine)


@pytest.fixture
def charts(sessions) -> dict[str, tuple]:
    """ROWS charts under the old keys; every fifth one has no MRN (NULL stays NULL)."""
    expected = {}
    with sessions.begin() as session:
        for n in range(ROWS):
            values = (f"Patient {n}", None if n % 5 == 0 else f"MRN-{n:04d}", datetime.date(1950, 1, 1 + n % 28))
            chart = Chart(name=values[0], mrn=values[1], dob=values[2])
            session.add(chart)
            session.flush()
            expected[chart.id] = values
    return expected


VALUES = 3 * ROWS - ROWS // 5  # encrypted non-NULL values
TERMS = 2 * ROWS - ROWS // 5  # blind-index terms


def _only_new_keys(ring: Keyring) -> Keyring:
    """The rotated keyring with the old keys removed: proves nothing still needs them."""
    return Keyring(
        ring.primary, {ring.primary: ring.key(ring.primary)},
        ring.index_primary, {ring.index_primary: ring.index_key(ring.index_primary)},
    )


def _assert_all_readable(sessions, expected: dict[str, tuple]) -> None:
    with sessions() as session:
        for chart in session.scalars(sa.select(Chart)):
            assert (chart.name, chart.mrn, chart.dob) == expected[chart.id]
            found = session.scalars(
                sa.select(Chart.id).where(Chart.name_bidx.in_(blind_index_terms(Chart, "name", chart.name)))
            ).all()
            assert found == [chart.id]


def test_status_rotate_and_rerun(sessions, engine, charts, old_ring):
    assert rotation_status(engine, [Chart]) == {"keys": {"k1": VALUES}, "index_keys": {"i1": TERMS}}
    new_ring = old_ring.rotated()
    install_keyring(new_ring)
    with sessions() as session:
        assert rotation_status(session, [Chart]) == {
            "keys": {"k1": VALUES, "k2": 0},
            "index_keys": {"i1": TERMS, "i2": 0},
        }
    reports = []
    summary = rotate(sessions, [Chart], batch_size=7, progress=lambda done, total: reports.append((done, total)))
    assert (summary.reencrypted, summary.reindexed, summary.skipped) == (VALUES, TERMS, 0)
    assert summary.batches == 6 and reports[-1] == (ROWS, ROWS)
    assert rotation_status(engine, [Chart]) == {"keys": {"k1": 0, "k2": VALUES}, "index_keys": {"i1": 0, "i2": TERMS}}

    install_keyring(_only_new_keys(new_ring))
    _assert_all_readable(sessions, charts)
    assert rotate(sessions, [Chart]).rows == 0


def test_status_reports_values_under_keys_missing_from_the_keyring(engine, charts):
    stranger = Keyring("k9", {"k9": b"q" * 32}, "i9", {"i9": b"r" * 32})
    assert rotation_status(engine, [Chart], keyring=stranger) == {
        "keys": {"k9": 0, "<unknown>": VALUES},
        "index_keys": {"i9": 0, "<unknown>": TERMS},
    }


class Interrupted(Exception):
    pass


def test_interrupted_rotation_leaves_everything_readable_and_resumes(sessions, engine, charts, old_ring):
    new_ring = old_ring.rotated()
    install_keyring(new_ring)

    def crash(done: int, total: int) -> None:
        raise Interrupted(f"stopped after {done} of {total}")

    with pytest.raises(Interrupted, match="stopped after 10 of 40"):
        rotate(sessions, [Chart], batch_size=10, progress=crash)
    status = rotation_status(engine, [Chart])
    assert 0 < status["keys"]["k2"] < VALUES and status["keys"]["k1"] + status["keys"]["k2"] == VALUES
    _assert_all_readable(sessions, charts)

    summary = rotate(sessions, [Chart], batch_size=10)
    assert summary.rows == ROWS - 10 and summary.reencrypted == status["keys"]["k1"]
    assert rotation_status(engine, [Chart])["keys"] == {"k1": 0, "k2": VALUES}
    install_keyring(_only_new_keys(new_ring))
    _assert_all_readable(sessions, charts)


class Clinic(threading.Thread):
    """Reads and rewrites random charts while rotation runs, like the live application."""

    def __init__(self, sessions, expected: dict[str, tuple]) -> None:
        super().__init__(daemon=True)
        self.sessions = sessions
        self.expected = dict(expected)
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.writes = 0

    def run(self) -> None:
        rng = random.Random(7)
        ids = sorted(self.expected)
        try:
            while not self.stop.is_set():
                self._visit(rng.choice(ids), rng.random() < 0.5)
        except BaseException as exc:  # reported to the test thread
            self.errors.append(exc)

    def _visit(self, chart_id: str, write: bool) -> None:
        with self.sessions.begin() as session:
            chart = session.get(Chart, chart_id)
            assert (chart.name, chart.mrn, chart.dob) == self.expected[chart_id]
            if write:
                self.writes += 1
                chart.name = f"Renamed {self.writes}"
                self.expected[chart_id] = (chart.name, chart.mrn, chart.dob)


@pytest.mark.slow
def test_rotation_runs_online_without_losing_concurrent_writes(sessions, engine, charts, old_ring):
    new_ring = old_ring.rotated()
    install_keyring(new_ring)
    clinic = Clinic(sessions, charts)
    clinic.start()
    try:
        summary = rotate(sessions, [Chart], batch_size=4, progress=lambda done, total: time.sleep(0.02))
        time.sleep(0.1)
    finally:
        clinic.stop.set()
        clinic.join(timeout=30)
    assert not clinic.errors, clinic.errors
    assert clinic.writes > 0
    assert summary.reencrypted + summary.reindexed + summary.skipped >= VALUES - ROWS
    assert rotation_status(engine, [Chart]) == {"keys": {"k1": 0, "k2": VALUES}, "index_keys": {"i1": 0, "i2": TERMS}}
    install_keyring(_only_new_keys(new_ring))
    _assert_all_readable(sessions, clinic.expected)


def test_lost_compare_and_swap_keeps_the_application_write(sessions, engine, charts, old_ring):
    new_ring = old_ring.rotated()
    install_keyring(new_ring)
    spec = model_spec(Chart)
    raw = raw_table(spec)
    chart_id = next(i for i, values in charts.items() if values[1] is not None)
    with engine.connect() as conn:  # rotation's snapshot, taken before the application write
        snapshot = conn.execute(sa.select(raw).where(raw.c.id == chart_id)).mappings().one()
    with sessions.begin() as session:
        session.get(Chart, chart_id).name = "Fresh Name"

    summary = RotationSummary()
    with sessions.begin() as session:
        _rotate_row(session, spec, raw, snapshot, new_ring, summary)
    assert (summary.reencrypted, summary.reindexed, summary.skipped) == (2, 1, 2)
    with sessions() as session:
        chart = session.get(Chart, chart_id)
        assert (chart.name, chart.mrn, chart.dob) == ("Fresh Name", *charts[chart_id][1:])
    assert rotation_status(engine, [Chart])["keys"]["k2"] == 3  # the application's name, rotated mrn and dob
