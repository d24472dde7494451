"""rollouts: fleet rollouts in waves and their steps

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 08:14:59.312826

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0010'
down_revision: Union[str, Sequence[str], None] = '0009'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('rollouts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('command', sa.String(length=16), nullable=False),
    sa.Column('revision', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('concurrency', sa.Integer(), nullable=False),
    sa.Column('batch_size', sa.Integer(), nullable=True),
    sa.Column('stop_on_failure', sa.Boolean(), nullable=False),
    sa.Column('selection', sa.Text(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('lease_token', sa.String(length=32), nullable=True),
    sa.Column('lease_until', sa.DateTime(), nullable=True),
    sa.Column('dirty', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_rollouts_user_id_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rollouts'))
    )
    with op.batch_alter_table('rollouts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rollouts_status'), ['status'], unique=False)

    op.create_table('rollout_steps',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('rollout_id', sa.Integer(), nullable=False),
    sa.Column('wave', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('target', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=24), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=True),
    sa.Column('request_id', sa.Integer(), nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('started_at', sa.DateTime(), nullable=True),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_rollout_steps_job_id_jobs'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['request_id'], ['approval_requests.id'], name=op.f('fk_rollout_steps_request_id_approval_requests'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['rollout_id'], ['rollouts.id'], name=op.f('fk_rollout_steps_rollout_id_rollouts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rollout_steps')),
    sa.UniqueConstraint('rollout_id', 'target', name=op.f('uq_rollout_steps_rollout_id'))
    )
    with op.batch_alter_table('rollout_steps', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rollout_steps_job_id'), ['job_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_rollout_steps_request_id'), ['request_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_rollout_steps_rollout_id'), ['rollout_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_rollout_steps_status'), ['status'], unique=False)



def downgrade() -> None:
    """Downgrade schema (dropping a table drops its indexes; MySQL refuses to
    drop an index a foreign key still needs)."""
    op.drop_table('rollout_steps')
    op.drop_table('rollouts')
