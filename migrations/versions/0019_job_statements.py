"""job_statements: the statement journal of jobs on non-transactional DDL

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 00:40:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

# revision identifiers, used by Alembic.
revision: str = '0019'
down_revision: Union[str, Sequence[str], None] = '0018'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('job_statements',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('revision', sa.String(length=64), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('sql', sa.Text().with_variant(mysql.MEDIUMTEXT(), 'mysql', 'mariadb'),
              nullable=False),
    sa.Column('object_kind', sa.String(length=16), nullable=True),
    sa.Column('object_table', sa.String(length=255), nullable=True),
    sa.Column('object_name', sa.String(length=255), nullable=True),
    sa.Column('started_at', sa.DateTime(), nullable=False),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'],
                            name=op.f('fk_job_statements_job_id_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_job_statements')),
    sa.UniqueConstraint('job_id', 'revision', 'position',
                        name=op.f('uq_job_statements_job_id'))
    )
    with op.batch_alter_table('job_statements', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_job_statements_job_id'), ['job_id'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('job_statements', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_job_statements_job_id'))
    op.drop_table('job_statements')
