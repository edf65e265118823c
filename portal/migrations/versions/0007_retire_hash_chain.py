"""retire the hash chain: the Merkle tree and its signed checkpoints become the audit log's only integrity structure

Before anything is dropped the chain is checked as it stands: every entry's hash and its link to its
predecessor, and every chain checkpoint's head (and, for those signed by the current audit key, its
signature). Every leaf the tree already holds (0005 built it, appends since kept it beside the chain)
must be its entry's leaf; entries it lacks are added in seq order (audit.tree.build_tree). A broken
chain stops the migration with the seq it broke at: its evidence is not thrown away silently.

Then each verified chain checkpoint (count, head hash) gets a signed tree checkpoint of the tree at the
same size, and the log's newest head one too, each carrying the chain's head there as an extension line
`audit-chain-head <entries> <hex SHA-256 head hash>` (audit.tree_checkpoints.CHAIN_HEAD_EXTENSION). The
line is covered by the signature, so an auditor holding an old chain checkpoint or export can tie it to
the tree, and the tree checkpoints stand at the multiples of PORTAL_AUDIT_CHECKPOINT_EVERY where the
chain's did, which verifiers require. Finally the chain columns (prev_hash, entry_hash) and the
audit_checkpoint table are dropped.

The audit signing key and the log's origin come from Alembic's config attributes (what `flask init-db`
passes, portal.migrate.upgrade), else from the environment's settings; a log without entries needs
neither. There is no downgrade: the chain cannot be re-signed.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 06:30:00.000000
"""
import hashlib
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from alembic import context, op

from audit import tree, tree_checkpoints
from audit.entries import SigningKey, canonical_json, load_signing_key
from audit.events import format_time
from audit.note import NoteSigner
from audit.queries import entry_from_row
from audit.schema import UtcDateTime, audit_entry, audit_tree_node, install_append_only_guard, remove_append_only_guard
from portal.config import Settings

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

GENESIS_HASH = "0" * 64
PAGE = 5000
_chain_rows = sa.select(audit_entry, sa.column("prev_hash"), sa.column("entry_hash")).order_by(audit_entry.c.seq)
_chain_checkpoints = sa.select(sa.column("count"), sa.column("head_hash"), sa.column("created", UtcDateTime()),
                               sa.column("key_id"), sa.column("signature")).select_from(sa.table("audit_checkpoint"))


class ChainBroken(RuntimeError):
    """The chain does not verify: the migration stops rather than drop the evidence."""


def _entry_hash(seq: int, prev_hash: str, event: dict[str, Any]) -> str:
    """The retired chain's entry hash: SHA-256 over canonical {seq, prev_hash, event}."""
    return hashlib.sha256(canonical_json({"seq": seq, "prev_hash": prev_hash, "event": event})).hexdigest()


def _pages(conn: sa.Connection) -> Iterator[list[sa.Row]]:
    last = 0
    while rows := conn.execute(_chain_rows.where(audit_entry.c.seq > last).limit(PAGE)).all():
        yield rows
        last = rows[-1].seq


def _check_chain(conn: sa.Connection, wanted: set[int]) -> tuple[int, dict[int, str]]:
    """Walk the chain; (head seq, {seq: entry hash} for the wanted seqs). Raises ChainBroken."""
    seq, prev_hash, heads = 0, GENESIS_HASH, {0: GENESIS_HASH}
    nodes = audit_tree_node.c
    for rows in _pages(conn):
        stored = dict(conn.execute(sa.select(nodes.idx, nodes.hash).where(
            nodes.level == 0, nodes.idx.between(rows[0].seq - 1, rows[-1].seq - 1))).all())
        for row in rows:
            entry = entry_from_row(row)
            if row.seq != seq + 1 or row.prev_hash != prev_hash:
                raise ChainBroken(f"the audit chain breaks at seq {row.seq}: verify the log before migrating")
            if _entry_hash(row.seq, row.prev_hash, entry.event.to_dict()) != row.entry_hash:
                raise ChainBroken(f"audit entry {row.seq} does not match its chain hash: verify the log first")
            if row.seq - 1 in stored and bytes(stored[row.seq - 1]) != entry.leaf_hash():
                raise ChainBroken(f"the Merkle leaf of audit entry {row.seq} is not that entry's")
            seq, prev_hash = row.seq, row.entry_hash
            if seq in wanted:
                heads[seq] = prev_hash
    heads[seq] = prev_hash
    return seq, heads


def _checkpoint_payload(row: sa.Row) -> bytes:
    return canonical_json({"count": row.count, "head_hash": row.head_hash, "created": format_time(row.created),
                           "key_id": row.key_id})


def _signer() -> tuple[SigningKey, str]:
    attributes = context.config.attributes
    if "audit_signing_key" in attributes:
        return attributes["audit_signing_key"], attributes["audit_log_origin"]
    settings = Settings.from_env()
    return load_signing_key(settings.audit_signing_key), settings.audit_log_origin


def _import_chain(conn: sa.Connection) -> None:
    checkpoints = conn.execute(_chain_checkpoints).all()
    head, heads = _check_chain(conn, {row.count for row in checkpoints})
    if head == 0:
        return
    key, origin = _signer()
    for row in checkpoints:
        if row.count > head or heads[row.count] != row.head_hash:
            raise ChainBroken(f"the chain checkpoint at count {row.count} does not match the chain")
        if row.key_id == key.key_id and not key.verify_key.verify(_checkpoint_payload(row), row.signature):
            raise ChainBroken(f"the chain checkpoint at count {row.count} has an invalid signature")
    if tree.build_tree(conn) != head or tree.stored_size(conn) != head:
        raise ChainBroken(f"the Merkle tree does not hold exactly the {head} chain entries")
    signer = NoteSigner(origin, key)
    for count in sorted({row.count for row in checkpoints if row.count > 0} | {head}):
        extension = f"{tree_checkpoints.CHAIN_HEAD_EXTENSION} {count} {heads[count]}"
        tree_checkpoints.sign(conn, signer, size=count, extensions=(extension,))


def upgrade() -> None:
    conn = op.get_bind()
    _import_chain(conn)
    if conn.dialect.name == "sqlite":
        # SQLite drops a column by copying the table: the triggers go with the old copy and come back after.
        remove_append_only_guard(conn, ("audit_entry", "audit_checkpoint"))
    op.drop_table('audit_checkpoint')
    with op.batch_alter_table('audit_entry', schema=None) as batch_op:
        batch_op.drop_column('entry_hash')
        batch_op.drop_column('prev_hash')
    if conn.dialect.name == "sqlite":
        install_append_only_guard(conn, ("audit_entry",))


def downgrade() -> None:
    raise NotImplementedError("the hash chain cannot be restored: it would need re-signing every checkpoint")
