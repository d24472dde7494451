"""rehearsals: dry runs of plans on scratch copies

Revision ID: 0008
Revises: 0004
Create Date: 2026-11-22 08:40:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

# revision identifiers, used by Alembic.
revision: str = "0008"
down_revision: Union[str, Sequence[str], None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('rehearsals',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('target', sa.String(length=64), nullable=False),
    sa.Column('command', sa.String(length=16), nullable=False),
    sa.Column('revision', sa.String(length=64), nullable=False),
    sa.Column('plan_hash', sa.String(length=64), nullable=False),
    sa.Column('passed', sa.Boolean(), nullable=False),
    sa.Column('result', sa.Text().with_variant(mysql.LONGTEXT(), 'mysql').with_variant(mysql.LONGTEXT(), 'mariadb'), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_rehearsals_user_id_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rehearsals'))
    )
    with op.batch_alter_table('rehearsals', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rehearsals_plan_hash'), ['plan_hash'], unique=False)
        batch_op.create_index(batch_op.f('ix_rehearsals_target'), ['target'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('rehearsals', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rehearsals_target'))
        batch_op.drop_index(batch_op.f('ix_rehearsals_plan_hash'))
    op.drop_table('rehearsals')
