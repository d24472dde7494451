"""changelog_entries, schema_snapshots, rehearsals.kind: changelogs with schema diffs, stairway tests

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 23:50:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

# revision identifiers, used by Alembic.
revision: str = '0017'
down_revision: Union[str, Sequence[str], None] = '0016'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('schema_snapshots',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('target', sa.String(length=64), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('body', sa.LargeBinary().with_variant(mysql.LONGBLOB(), 'mysql', 'mariadb'),
              nullable=False),
    sa.Column('taken_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_schema_snapshots'))
    )
    with op.batch_alter_table('schema_snapshots', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_schema_snapshots_target'), ['target'], unique=False)

    op.create_table('changelog_entries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('target', sa.String(length=64), nullable=False),
    sa.Column('revision', sa.String(length=1000), nullable=False),
    sa.Column('direction', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=True),
    sa.Column('request_id', sa.Integer(), nullable=True),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('seconds', sa.Float(), nullable=True),
    sa.Column('before_id', sa.Integer(), nullable=True),
    sa.Column('after_id', sa.Integer(), nullable=True),
    sa.Column('schema_diff', sa.Text().with_variant(mysql.LONGTEXT(), 'mysql', 'mariadb'),
              nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'],
                            name=op.f('fk_changelog_entries_job_id_jobs'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['request_id'], ['approval_requests.id'],
                            name=op.f('fk_changelog_entries_request_id_approval_requests'),
                            ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'],
                            name=op.f('fk_changelog_entries_user_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['before_id'], ['schema_snapshots.id'],
                            name=op.f('fk_changelog_entries_before_id_schema_snapshots'),
                            ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['after_id'], ['schema_snapshots.id'],
                            name=op.f('fk_changelog_entries_after_id_schema_snapshots'),
                            ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_changelog_entries'))
    )
    with op.batch_alter_table('changelog_entries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_changelog_entries_target'), ['target'], unique=False)
        batch_op.create_index(batch_op.f('ix_changelog_entries_job_id'), ['job_id'], unique=False)


    with op.batch_alter_table('rehearsals', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=16), server_default='rehearsal',
                                      nullable=False))


def downgrade() -> None:
    """Downgrade schema (the tables' indexes go with them: MariaDB refuses to
    drop an index a foreign key needs)."""
    with op.batch_alter_table('rehearsals', schema=None) as batch_op:
        batch_op.drop_column('kind')
    op.drop_table('changelog_entries')
    op.drop_table('schema_snapshots')
