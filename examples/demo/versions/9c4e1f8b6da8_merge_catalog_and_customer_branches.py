"""merge catalog and customer branches

Revision ID: 9c4e1f8b6da8
Revises: 6f1b8c5e3a75, 8b3d0e7a5c97
Create Date: 2026-04-08 09:32:57.026841

"""
from collections.abc import Sequence

# revision identifiers, used by Alembic.
revision: str = '9c4e1f8b6da8'
down_revision: str | Sequence[str] | None = ('6f1b8c5e3a75', '8b3d0e7a5c97')
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""


def downgrade() -> None:
    """Downgrade schema."""
