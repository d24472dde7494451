"""jobs.recovery and approval_requests.recovery: resume jobs of a failed job's journal

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07 03:10:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision: str = '0020'
down_revision: Union[str, Sequence[str], None] = '0019'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('jobs') as batch_op:
        batch_op.add_column(sa.Column('recovery', sa.Text(), nullable=True))
    with op.batch_alter_table('approval_requests') as batch_op:
        batch_op.add_column(sa.Column('recovery_of', sa.Integer(), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('approval_requests') as batch_op:
        batch_op.drop_column('recovery_of')
    with op.batch_alter_table('jobs') as batch_op:
        batch_op.drop_column('recovery')
