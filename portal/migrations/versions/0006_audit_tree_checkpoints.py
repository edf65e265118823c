"""signed tree checkpoints: audit_tree_checkpoint (C2SP signed notes) and audit_tree_cosignature (witnesses')

Both append-only like the other audit tables. Existing logs get their first tree checkpoint from the
next append (or `store.sign_tree_checkpoint()`).
"""
import sqlalchemy as sa
from alembic import op

from audit.schema import install_append_only_guard

revision = '0006'
down_revision = '0005'


def upgrade() -> None:
    op.create_table('audit_tree_checkpoint',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('tree_size', sa.BigInteger(), nullable=False),
    sa.Column('root_hash', sa.LargeBinary(length=32), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_audit_tree_checkpoint_tree_size', 'audit_tree_checkpoint', ['tree_size'])
    op.create_table('audit_tree_cosignature',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('tree_size', sa.BigInteger(), nullable=False),
    sa.Column('root_hash', sa.LargeBinary(length=32), nullable=False),
    sa.Column('witness', sa.Text(), nullable=False),
    sa.Column('cosigned_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_audit_tree_cosignature_tree_size', 'audit_tree_cosignature', ['tree_size'])
    install_append_only_guard(op.get_bind(), ('audit_tree_checkpoint', 'audit_tree_cosignature'))


def downgrade() -> None:
    op.drop_table('audit_tree_cosignature')  # their append-only triggers go with them
    op.drop_table('audit_tree_checkpoint')
