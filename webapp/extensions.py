"""Flask extensions, created here and bound to the app in :func:`webapp.create_app`."""

from __future__ import annotations

from flask_login import LoginManager
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base of the dashboard's own tables (stable constraint names)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


db = SQLAlchemy(model_class=Base)
login_manager = LoginManager()
csrf = CSRFProtect()


def init_db(app) -> None:
    """Bind :data:`db` to ``app``. A SQLite dashboard database is switched to
    write-ahead logging (WAL) on every new connection: gunicorn workers and
    job processes share the one file, and in WAL mode a reader (a page, an
    API call) never waits for a writer, even one stopped in the middle of a
    commit. The mode is the file's own, so the PRAGMA is a no-op after the
    first time; on a file system without shared memory SQLite keeps its old
    mode. Target databases are never touched: only this engine listens.
    """
    from sqlalchemy import event

    db.init_app(app)
    with app.app_context():
        engine = db.engine
    if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        event.listen(engine, "connect", _use_write_ahead_log)


def _use_write_ahead_log(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
    finally:
        cursor.close()
