"""Helpers for the lock-guard tests: a big table on a real server, stamped."""

from __future__ import annotations

import sqlalchemy as sa

ROWS = 200_000


def fill_big_table(url: str, rows: int = ROWS) -> None:
    """Table ``big`` (``id`` primary key, ``payload``) with ``rows`` rows,
    filled by the server itself (PostgreSQL ``generate_series``, MariaDB's
    sequence engine), and an ``alembic_version`` table at ``r000``."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("CREATE TABLE big AS SELECT g AS id, md5(g::text) AS payload "
                                 f"FROM generate_series(1, {rows:d}) g"))
            conn.execute(sa.text("ALTER TABLE big ADD PRIMARY KEY (id)"))
        else:
            conn.execute(sa.text("CREATE TABLE big (id INT PRIMARY KEY, payload VARCHAR(32)) "
                                 "ENGINE=InnoDB"))
            conn.execute(sa.text(f"INSERT INTO big SELECT seq, MD5(seq) FROM seq_1_to_{rows:d}"))
        conn.execute(sa.text("CREATE TABLE alembic_version (version_num VARCHAR(32) "
                             "NOT NULL PRIMARY KEY)"))
        conn.execute(sa.text("INSERT INTO alembic_version VALUES ('r000')"))
    engine.dispose()
