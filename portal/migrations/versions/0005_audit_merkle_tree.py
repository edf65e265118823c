"""the audit log's Merkle tree: audit_tree_node holds every complete subtree's RFC 9162 hash

Existing entries are added to the tree in seq order (audit.tree.build_tree), so an upgraded log
proves inclusion and consistency for its old entries too. The hash chain columns stay.
"""
import sqlalchemy as sa
from alembic import op

from audit.schema import install_append_only_guard
from audit.tree import build_tree

revision = '0005'
down_revision = '0004'


def upgrade() -> None:
    op.create_table('audit_tree_node',
    sa.Column('level', sa.SmallInteger(), autoincrement=False, nullable=False),
    sa.Column('idx', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('hash', sa.LargeBinary(length=32), nullable=False),
    sa.PrimaryKeyConstraint('level', 'idx')
    )
    build_tree(op.get_bind())
    install_append_only_guard(op.get_bind(), ('audit_tree_node',))


def downgrade() -> None:
    op.drop_table('audit_tree_node')  # its append-only triggers go with it
