"""Read paths: a connection the database itself refuses writes on.

Plans, offline SQL (revision, range, ``--sql``) and the autogenerate preview
only read the target's database. Two layers make sure of it:

- the URL handed to env.py opens read-only from the driver's first byte
  (:func:`read_only_url`: SQLite ``mode=ro``, PostgreSQL
  ``default_transaction_read_only``, MySQL/MariaDB ``SET SESSION
  TRANSACTION READ ONLY`` as ``init_command``);
- every connection env.py actually makes — also with a ``creator=`` or a
  URL of its own — must be to the target's database and is made read-only
  there before its first statement (:func:`.guards.connections_follow`).

A read-only account named in the targets file (``readonly_url_env``) is
what the database enforces whatever the target's code does.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

from .guards import ConnectionRefused, Rule, connections_follow, family_of, sqlite_file


class ReadRefused(ConnectionRefused):
    """A read path (plan, offline SQL, preview) connected elsewhere than the target."""


READ_REFUSED = ("env.py connected to a database other than the target's ({where}, not "
                "{allowed}): it opens its own connection instead of using sqlalchemy.url. "
                "The dashboard only reads a target's own database, through a read-only "
                "connection, so it stopped before any statement ran there.")


def rule_for(url: str | None, *, read_only: bool, refused: type[ConnectionRefused] | None = None,
             message: str = READ_REFUSED) -> Rule | None:
    """The rule "only the database of ``url``" (None for no URL: a
    Flask-Migrate app's own; then only read-only is applied, SQLite aside)."""
    from sqlalchemy.engine import make_url

    if not url:
        return None
    parsed = make_url(url)
    family = family_of(parsed.get_backend_name())
    database = sqlite_file(parsed.database) if family == "sqlite" else parsed.database
    return Rule(family, database, read_only, refused or ReadRefused, message)


def read_only_url(url: str) -> str:
    """``url`` opened read-only by the database itself, from the connect on:
    SQLite ``file:PATH?mode=ro`` (a missing file is not created);
    PostgreSQL (psycopg, psycopg2) ``options=-c default_transaction_read_only=on``;
    MySQL/MariaDB (PyMySQL, mysqlclient) ``init_command=SET SESSION
    TRANSACTION READ ONLY``. Other drivers, and URLs that already set those
    options, are returned unchanged (the connect-time check still applies
    the setting). The password is kept: the result is a connect URL."""
    from urllib.parse import quote

    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    family, driver = family_of(parsed.get_backend_name()), parsed.get_driver_name()
    query = dict(parsed.query)
    if family == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or database.startswith("file:") or "uri" in query:
            return url
        parsed = parsed.set(database="file:" + quote(database)).update_query_dict(
            {"mode": "ro", "uri": "true"})
    elif family == "postgresql" and driver in ("psycopg", "psycopg2"):
        options = str(query.get("options") or "")
        if "default_transaction_read_only" in options:
            return url
        parsed = parsed.update_query_dict({"options": (
            options + " -c default_transaction_read_only=on").strip()})
    elif family == "mysql" and driver in ("pymysql", "mysqldb") and "init_command" not in query:
        parsed = parsed.update_query_dict({"init_command": "SET SESSION TRANSACTION READ ONLY"})
    else:
        return url
    return parsed.render_as_string(hide_password=False)


class DatabaseMissing(Exception):
    """A SQLite database file that does not exist (reading it would create it)."""


def read_only_request(request: dict) -> dict:
    """``request`` with its URL read-only (:func:`read_only_url`), for the
    Alembic Config of a read path; the original URL stays the one to name
    the database by (its SQLite path, the scratch copy's source)."""
    return dict(request, url=read_only_url(request["url"])) if request.get("url") else request


@contextmanager
def reading(request: dict, *, must_exist: bool = False):
    """A read of the target's database (plan, offline SQL, preview): every
    connection of the block must be to the database of ``request["url"]``
    and is made read-only in it (give env.py :func:`read_only_request`).

    :param must_exist: refuse a SQLite file that does not exist (the
        preview compares with it; offline SQL does not open it at all).
    :raises DatabaseMissing: ``must_exist`` and a SQLite file that does not exist.
    :raises ReadRefused: (from a connect) env.py connected elsewhere.
    """
    rule = rule_for(request.get("url"), read_only=True)
    if must_exist and rule is not None and rule.family == "sqlite" and rule.database \
            and not os.path.exists(rule.database):
        raise DatabaseMissing(f"the SQLite database {rule.database} does not exist; "
                              "nothing was read (and no file was created)")
    with connections_follow(rule):
        yield


def read_path(*, must_exist: bool = False):
    """Decorator: run the op ``fn(request)`` inside :func:`reading`."""
    import functools

    def decorate(fn):
        @functools.wraps(fn)
        def op(request: dict) -> dict:
            with reading(request, must_exist=must_exist):
                return fn(request)
        return op

    return decorate
