"""What each Alembic revision does to a database, as the SQL it sends, recorded once and compared ever after.

A revision that has shipped may already have run in a clinic: its source may be tidied, but the statements it
sends must not change. ``tests/vectors/migrations/<dialect>.txt`` holds them per step (each revision's upgrade,
then each downgrade), as frozen from the revisions when they shipped; tests/integration/portal/test_migrations.py
replays the revisions and compares. Reflection queries (PRAGMA, catalog reads) are left out: they belong to
SQLAlchemy's version, not to the revision; everything that writes (DDL, DML, the version table) is kept.

After adding a revision, freeze it with the others (a fresh SQLite file and a new PostgreSQL database):
``python -m tests.support.migration_ddl sqlite:////tmp/freeze.db postgresql+psycopg2://postgres@127.0.0.1:5432/new_db``
"""
from __future__ import annotations

import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory

from portal.migrate import alembic_config

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "migrations"
WRITES = re.compile(r"\s*(CREATE|ALTER|DROP|INSERT|UPDATE|DELETE|TRUNCATE|COMMENT)\b", re.IGNORECASE)
CONSTRAINT = re.compile(r"\s*(PRIMARY KEY|UNIQUE|FOREIGN KEY|CHECK|CONSTRAINT)\b")
STEP = re.compile(r"^-- step: (\S+ \S+)$", re.MULTILINE)


def revisions(database_url: str) -> list[str]:
    """Every revision id, oldest first."""
    scripts = ScriptDirectory.from_config(alembic_config(database_url))
    return [script.revision for script in reversed(list(scripts.walk_revisions()))]


def replayed(database_url: str, upto: list[str]) -> dict[str, str]:
    """Upgrade an empty database through ``upto`` one revision at a time, then downgrade it back to nothing;
    the statements each step sent, keyed ``"upgrade 0001"`` … ``"downgrade 0001"``."""
    config = alembic_config(database_url)
    steps: dict[str, str] = {}
    for revision in upto:
        with _recorded() as sent:
            command.upgrade(config, revision)
        steps[f"upgrade {revision}"] = _rendered(sent)
    for revision, below in zip(reversed(upto), [*reversed(upto[:-1]), "base"], strict=True):
        with _recorded() as sent:
            command.downgrade(config, below)
        steps[f"downgrade {revision}"] = _rendered(sent)
    return steps


def frozen(dialect: str) -> dict[str, str]:
    """The recorded steps of one dialect (``sqlite``, ``postgresql``)."""
    text = (VECTORS / f"{dialect}.txt").read_text()
    parts = STEP.split(text)[1:]
    return {step: body.strip("\n") for step, body in zip(parts[::2], parts[1::2], strict=True)}


def frozen_revisions(dialect: str) -> list[str]:
    return [step.split()[1] for step in frozen(dialect) if step.startswith("upgrade ")]


@contextmanager
def _recorded() -> Iterator[list[tuple[str, object]]]:
    """Every statement any engine sends meanwhile (the migration environment makes its own engine)."""
    sent: list[tuple[str, object]] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        if WRITES.match(statement):
            sent.append((statement, parameters))

    sa.event.listen(sa.Engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        sa.event.remove(sa.Engine, "before_cursor_execute", record)


def _rendered(sent: list[tuple[str, object]]) -> str:
    lines = []
    for statement, parameters in _indexes_sorted(sent):
        lines.append(_canonical(statement) + ";")
        if parameters:
            lines.append(f"-- parameters: {dict(parameters) if isinstance(parameters, Mapping) else parameters!r}")
    return "\n".join(lines)


def _indexes_sorted(sent: list[tuple[str, object]]) -> list[tuple[str, object]]:
    """Each run of CREATE INDEX statements in name order: SQLite's batch mode recreates a copied table's
    indexes in set order, and the order of independent indexes changes nothing."""
    out: list[tuple[str, object]] = []
    run: list[tuple[str, object]] = []
    for item in [*sent, ("", None)]:
        if item[0].lstrip().startswith("CREATE INDEX"):
            run.append(item)
            continue
        out += sorted(run, key=lambda created: created[0])
        out.append(item)
        run = []
    return out[:-1]


def _canonical(statement: str) -> str:
    """The statement without trailing blanks; a CREATE TABLE's constraints sorted, as SQLite's batch mode
    (a table copied to drop a column) lists the reflected ones in set order, which changes from run to run."""
    lines = [line.rstrip() for line in statement.strip().splitlines()]
    if not lines[0].startswith("CREATE TABLE") or lines[-1] != ")":
        return "\n".join(lines)
    body = [line.removesuffix(",") for line in lines[1:-1]]
    columns = [line for line in body if not CONSTRAINT.match(line)]
    constraints = sorted(line for line in body if CONSTRAINT.match(line))
    return "\n".join([lines[0], ",\n".join(columns + constraints), lines[-1]])


def freeze(database_url: str) -> Path:
    """Record every revision's steps on this (empty) database into the dialect's vector file."""
    dialect = sa.engine.make_url(database_url).get_backend_name()
    steps = replayed(database_url, revisions(database_url))
    path = VECTORS / f"{dialect}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"-- step: {step}\n{body}\n\n" for step, body in steps.items()))
    return path


if __name__ == "__main__":
    for url in sys.argv[1:]:
        print(freeze(url))
