"""accounts in the browser: password links (invites, resets), service accounts,
token expiry and role ceiling

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 23:30:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision: str = '0014'
down_revision: Union[str, Sequence[str], None] = '0013'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('is_service', sa.Boolean(), server_default=sa.false(),
                                      nullable=False))
        batch_op.add_column(sa.Column('password_link_hash', sa.String(length=64),
                                      nullable=True))
        batch_op.add_column(sa.Column('password_link_expires_at', sa.DateTime(),
                                      nullable=True))
        batch_op.create_index(batch_op.f('ix_users_password_link_hash'),
                              ['password_link_hash'], unique=True)
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('expires_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('role_ceiling', sa.String(length=16), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_column('role_ceiling')
        batch_op.drop_column('expires_at')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_users_password_link_hash'))
        batch_op.drop_column('password_link_expires_at')
        batch_op.drop_column('password_link_hash')
        batch_op.drop_column('is_service')
