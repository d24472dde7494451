"""jobs.worker_start: which process runs a job (boot id and start time)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 08:30:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision: str = '0004'
down_revision: Union[str, Sequence[str], None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('jobs') as batch_op:
        batch_op.add_column(sa.Column('worker_start', sa.String(length=64), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('jobs') as batch_op:
        batch_op.drop_column('worker_start')
