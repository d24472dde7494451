"""request review: viewed ticks per revision, comment threads, approvals
without viewing, a longer request status (changes_requested)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 23:30:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision: str = '0015'
down_revision: Union[str, Sequence[str], None] = '0014'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('request_views',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('request_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('revision', sa.String(length=64), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('plan_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['request_id'], ['approval_requests.id'], name=op.f('fk_request_views_request_id_approval_requests'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_request_views_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_request_views')),
    sa.UniqueConstraint('request_id', 'user_id', 'revision', name=op.f('uq_request_views_request_id'))
    )
    op.create_table('request_comments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('request_id', sa.Integer(), nullable=False),
    sa.Column('author_id', sa.Integer(), nullable=True),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('plan_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['author_id'], ['users.id'], name=op.f('fk_request_comments_author_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['request_id'], ['approval_requests.id'], name=op.f('fk_request_comments_request_id_approval_requests'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_request_comments'))
    )
    with op.batch_alter_table('request_comments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_request_comments_request_id'), ['request_id'], unique=False)
    with op.batch_alter_table('approvals', schema=None) as batch_op:
        batch_op.add_column(sa.Column('without_viewing', sa.Boolean(), server_default=sa.false(), nullable=False))
    with op.batch_alter_table('approval_requests', schema=None) as batch_op:
        batch_op.alter_column('status', existing_type=sa.String(length=16),
                              type_=sa.String(length=32), existing_nullable=False)


def downgrade() -> None:
    """Downgrade schema. A request whose changes were requested is open
    again (the old schema has no such status)."""
    op.execute("UPDATE approval_requests SET status = 'open' WHERE status = 'changes_requested'")
    with op.batch_alter_table('approval_requests', schema=None) as batch_op:
        batch_op.alter_column('status', existing_type=sa.String(length=32),
                              type_=sa.String(length=16), existing_nullable=False)
    with op.batch_alter_table('approvals', schema=None) as batch_op:
        batch_op.drop_column('without_viewing')
    # dropping the table drops its index (MySQL refuses to drop an index a foreign key needs)
    op.drop_table('request_comments')
    op.drop_table('request_views')
