"""Tables of the SQL audit store and the triggers that make them append-only.

Kept apart from the store so an Alembic migration can import the table definitions and
the trigger DDL without pulling in anything else.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

import sqlalchemy as sa

metadata = sa.MetaData()


class UtcDateTime(sa.types.TypeDecorator):
    """Aware UTC datetimes in, aware UTC datetimes out, whatever the backend stores.

    PostgreSQL keeps a timestamptz; SQLite keeps naive UTC text. Microseconds survive
    both round trips, which matters because the event time is part of the hash.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("audit timestamps must be timezone-aware")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


audit_entry = sa.Table(
    "audit_entry",
    metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=False),
    sa.Column("time", UtcDateTime(), nullable=False),
    sa.Column("actor_id", sa.Text()),
    sa.Column("actor_role", sa.Text()),
    sa.Column("action", sa.Text(), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("patient_id", sa.Text()),
    sa.Column("resource_type", sa.Text()),
    sa.Column("resource_id", sa.Text()),
    sa.Column("reason", sa.Text()),
    sa.Column("source_ip", sa.Text()),
    sa.Column("user_agent", sa.Text()),
    sa.Column("request_id", sa.Text()),
    sa.Column("session_hash", sa.Text()),
    sa.Column("details", sa.Text(), nullable=False),
    sa.Index("ix_audit_entry_time", "time"),
    sa.Index("ix_audit_entry_actor_id", "actor_id"),
    sa.Index("ix_audit_entry_patient_id", "patient_id"),
    sa.Index("ix_audit_entry_action", "action"),
    sa.Index("ix_audit_entry_outcome", "outcome"),
)

audit_tree_node = sa.Table(
    "audit_tree_node",
    metadata,
    # The RFC 9162 hash of the perfect subtree of 2**level leaves starting at leaf idx * 2**level
    # (audit/merkle.py); level 0 holds the leaf hashes. Written in the transaction that appends the
    # entries that complete it, never changed; any tree hash or proof reads O(log n) of these rows.
    sa.Column("level", sa.SmallInteger(), primary_key=True, autoincrement=False),
    sa.Column("idx", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=False),
    sa.Column("hash", sa.LargeBinary(32), nullable=False),
)

def _tree_head_columns() -> tuple[sa.Column, ...]:
    """An id, and the tree (size and RFC 9162 root) a signed note is about: fresh columns for each table."""
    return (sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
            sa.Column("tree_size", sa.BigInteger(), nullable=False),
            sa.Column("root_hash", sa.LargeBinary(32), nullable=False))


audit_tree_checkpoint = sa.Table(
    "audit_tree_checkpoint",
    metadata,
    # A C2SP tlog-checkpoint of the tree, signed as a C2SP signed note (audit/tree_checkpoints.py):
    # `note` is the whole signed note text, tree_size and root_hash repeat its body for queries.
    *_tree_head_columns(),
    sa.Column("created", UtcDateTime(), nullable=False),
    sa.Column("note", sa.Text(), nullable=False),
    sa.Index("ix_audit_tree_checkpoint_tree_size", "tree_size"),
)

audit_tree_cosignature = sa.Table(
    "audit_tree_cosignature",
    metadata,
    # A witness's cosignature of a tree checkpoint, kept as the note carrying both the log's signature
    # and the witness's. A table of its own because the audit tables are append-only: a checkpoint row
    # is never updated to add its cosignature.
    *_tree_head_columns(),
    sa.Column("witness", sa.Text(), nullable=False),
    sa.Column("cosigned_at", UtcDateTime(), nullable=False),
    sa.Column("note", sa.Text(), nullable=False),
    sa.Index("ix_audit_tree_cosignature_tree_size", "tree_size"),
)

AUDIT_TABLES = (audit_entry.name, audit_tree_node.name, audit_tree_checkpoint.name,
                audit_tree_cosignature.name)

# No '%' anywhere: DB-API drivers would read it as a parameter placeholder.
_REJECT_FUNCTION = """
CREATE OR REPLACE FUNCTION audit_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING
        MESSAGE = 'audit log is append-only: ' || TG_OP || ' on ' || TG_TABLE_NAME || ' rejected',
        ERRCODE = 'insufficient_privilege';
END
$$
"""


def _postgres_guard(tables: Sequence[str] = AUDIT_TABLES) -> tuple[str, ...]:
    statements = [_REJECT_FUNCTION]
    for table in tables:
        statements += [
            f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}",
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION audit_reject_change()",
            f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}",
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION audit_reject_change()",
        ]
    return tuple(statements)


def _sqlite_guard(tables: Sequence[str] = AUDIT_TABLES) -> tuple[str, ...]:
    # SQLite has no TRUNCATE; a bare DELETE is covered by the delete trigger.
    return tuple(
        f"CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON {table} "
        f"BEGIN SELECT RAISE(ABORT, 'audit log is append-only: {op} on {table} rejected'); END"
        for table in tables
        for op in ("UPDATE", "DELETE")
    )


def _drop_ddl(tables: Sequence[str] = AUDIT_TABLES) -> dict[str, tuple[str, ...]]:
    return {
        "postgresql": tuple(
            f"DROP TRIGGER IF EXISTS {table}_{name} ON {table}"
            for table in tables
            for name in ("append_only", "no_truncate")
        )
        + ("DROP FUNCTION IF EXISTS audit_reject_change()",),
        "sqlite": tuple(f"DROP TRIGGER IF EXISTS {table}_no_{op}" for table in tables for op in ("update", "delete")),
    }


APPEND_ONLY_DDL: dict[str, tuple[str, ...]] = {"postgresql": _postgres_guard(), "sqlite": _sqlite_guard()}

DROP_APPEND_ONLY_DDL: dict[str, tuple[str, ...]] = _drop_ddl()


def _run(connection: sa.Connection, ddl: dict[str, tuple[str, ...]]) -> None:
    dialect = connection.dialect.name
    if dialect not in ddl:
        raise ValueError(f"the append-only guard supports PostgreSQL and SQLite, not {dialect}")
    for statement in ddl[dialect]:
        connection.exec_driver_sql(statement)


def install_append_only_guard(connection: sa.Connection, tables: Sequence[str] = AUDIT_TABLES) -> None:
    """Make UPDATE, DELETE (and TRUNCATE on PostgreSQL) of audit rows fail inside the database.

    The hashes detect tampering after the fact; the triggers stop accidental or casual edits
    from happening at all. Idempotent; a migration names the tables that exist at its revision:
    `install_append_only_guard(op.get_bind(), ("audit_tree_node",))`.
    """
    _run(connection, {"postgresql": _postgres_guard(tables), "sqlite": _sqlite_guard(tables)})


def remove_append_only_guard(connection: sa.Connection, tables: Sequence[str] = AUDIT_TABLES) -> None:
    """Drop the triggers again (a migration's downgrade; tamper tests playing an attacker)."""
    _run(connection, _drop_ddl(tables))


def create_tables(engine: sa.Engine) -> None:
    """Create the audit tables and their guard for standalone use (tests, CLI, bench)."""
    with engine.begin() as connection:
        metadata.create_all(connection)
        install_append_only_guard(connection)
