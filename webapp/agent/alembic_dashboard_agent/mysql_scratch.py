"""MySQL/MariaDB scratch schemas for rehearsals (:mod:`.dry_run`), run as an
account the server keeps off the real schema.

On MySQL/MariaDB a schema is a database, so the target's own account could
reach the real schema from the copy (``schema=``, ``INSERT INTO real.t``,
``USE real``). The migrations therefore run as a temporary account created
for the rehearsal with rights on the scratch schema only (random name and
password, dropped afterwards whatever happened). Where no such account can
be made: :class:`RehearsalUnsafe`, nothing run.
"""

from __future__ import annotations

import secrets
import sys
from contextlib import contextmanager
from dataclasses import dataclass

from .database import engine, read_current


class RehearsalUnsafe(Exception):
    """A MySQL/MariaDB rehearsal cannot be kept off the real schema: the
    account may not create a temporary one and no rehearsal server is named."""


UNSAFE = (
    "Not rehearsed: on MySQL/MariaDB a rehearsal runs its migrations as a temporary account "
    "with rights on the scratch schema only, so that the server refuses any statement on the "
    "real schema, and the target's account ({account}) may not create one ({why}). Nothing "
    "was run. Either name a rehearsal server in the targets file (rehearsal_url_env: the URL "
    "of an account with no rights on the real database and all rights on the schemas "
    "`<database>\\_rehearsal\\_%`, <database> being that URL's database, or {pattern} when "
    "it names none), or grant the target's account CREATE USER and ALL ON {pattern}.* WITH "
    "GRANT OPTION.")


def mysql_read(url: str, version_table: str) -> tuple[list[str], list[str]]:
    """The real schema's ``CREATE TABLE`` statements and current revisions
    (sorted), read in a session the server keeps read-only."""
    from sqlalchemy import text

    real = engine(url)
    try:
        with real.connect() as conn:
            conn.exec_driver_sql("SET SESSION TRANSACTION READ ONLY")
            tables = [row[0] for row in conn.execute(text(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = "
                "DATABASE() AND table_type = 'BASE TABLE'"))]
            ddl = [conn.execute(text("SHOW CREATE TABLE `{}`".format(name.replace("`", "``"))))
                   .one()[1] for name in tables]
            current = read_current(conn, version_table)
    finally:
        real.dispose()
    return ddl, sorted(current)


def mysql_build(run_url: str, ddl: list[str]) -> None:
    """Create the tables of ``ddl`` in the scratch schema as the account the
    rehearsal runs as (foreign-key checks off: the tables come in any order)."""
    from sqlalchemy import text

    copy = engine(run_url)
    try:
        with copy.begin() as conn:
            conn.execute(text("SET FOREIGN_KEY_CHECKS = 0"))
            for statement in ddl:
                conn.execute(text(statement))
    finally:
        copy.dispose()


@dataclass
class _Account:
    """The account a MySQL/MariaDB rehearsal runs as.

    :ivar url: its URL to the scratch schema (holds ``password``).
    :ivar user: its user name; ``host`` the host part of the account.
    :ivar password: the temporary account's password (None: not temporary).
    :ivar temporary: created for this rehearsal, dropped after it.
    """

    url: str
    user: str
    host: str
    password: str | None
    temporary: bool


def _admin_engine(server_url: str):
    """An autocommit engine on the server whose errors never show statement
    parameters (the temporary password is one)."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    return create_engine(server_url, poolclass=NullPool, isolation_level="AUTOCOMMIT",
                         hide_parameters=True)


def _reason(exc) -> str:
    """The server's own words for a refused statement (error code and
    message; never the statement or its parameters)."""
    args = getattr(exc.orig, "args", ())
    return " ".join(str(a) for a in args[:2]) if args else type(exc.orig).__name__


def _create_account(conn, scratch: str) -> tuple[str, str, str] | str:
    """Create a temporary account with ``ALL`` on ``scratch``.* and nothing
    else, at the host the server sees this client as (``USER()``: the most
    specific match, ahead of any anonymous account).

    :return: (user, host, password), or the server's reason it could not
        be made (no password in it).
    """
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    host = str(conn.execute(text("SELECT USER()")).scalar_one()).rsplit("@", 1)[-1]
    user, password = f"rehearsal_{secrets.token_hex(5)}", secrets.token_hex(16)
    account = {"u": user, "h": host}
    try:
        conn.execute(text("CREATE USER :u@:h IDENTIFIED BY :p"), dict(account, p=password))
    except DBAPIError as exc:
        return _reason(exc)
    try:
        conn.execute(text(f"GRANT ALL ON `{scratch}`.* TO :u@:h"), account)
    except DBAPIError as exc:
        conn.execute(text("DROP USER IF EXISTS :u@:h"), account)
        return _reason(exc)
    return user, host, password


def _drop_account(conn, account: _Account) -> None:
    """End the temporary account's sessions (a connection env.py left open
    would keep its locks) and drop the account."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    names = {"u": account.user, "h": account.host}
    try:
        threads = conn.execute(text(
            "SELECT id FROM information_schema.processlist WHERE user = :u"), names).scalars()
        for thread in list(threads):
            conn.execute(text(f"KILL CONNECTION {int(thread)}"))
    except DBAPIError:  # no right to: its sessions end with this process
        pass
    conn.execute(text("DROP USER IF EXISTS :u@:h"), names)


def _run_as(server_url: str, scratch: str, made: tuple[str, str, str] | str,
            separate: bool) -> _Account:
    """The :class:`_Account` for what :func:`_create_account` returned.

    :raises RehearsalUnsafe: no temporary account on the target's own server.
    """
    from sqlalchemy.engine import make_url

    server = make_url(server_url)
    if isinstance(made, tuple):
        user, host, password = made
        url = server.set(username=user, password=password, database=scratch)
        return _Account(url.render_as_string(hide_password=False), user, host, password, True)
    if not separate:
        pattern = "`" + scratch.rsplit("_rehearsal_", 1)[0] + "\\_rehearsal\\_%`"
        raise RehearsalUnsafe(UNSAFE.format(account=server.username or "?", why=made,
                                            pattern=pattern))
    # the rehearsal server's own account: the targets file says it is meant for this
    url = server.set(database=scratch)
    return _Account(url.render_as_string(hide_password=False), server.username or "", "",
                    None, False)


@contextmanager
def mysql_scratch(server_url: str, scratch: str, separate: bool):
    """Create the account the rehearsal runs as and the scratch schema
    ``scratch`` on ``server_url``'s server; yield the :class:`_Account`;
    drop both afterwards, whatever happened.

    :param separate: ``server_url`` is the rehearsal server's; its account
        runs the rehearsal itself when it may not create a temporary one.
    :raises RehearsalUnsafe: on the target's own server, no temporary
        account could be made (raised before anything is created).
    """
    from sqlalchemy import text

    admin = _admin_engine(server_url)
    try:
        with admin.connect() as conn:
            account = _run_as(server_url, scratch, _create_account(conn, scratch), separate)
            try:
                conn.execute(text(f"CREATE DATABASE `{scratch}`"))
                try:
                    yield account
                finally:
                    conn.execute(text(f"DROP DATABASE IF EXISTS `{scratch}`"))
            finally:
                if account.temporary:
                    _drop_account(conn, account)
    finally:
        admin.dispose()


class _Scrubbing:
    """A text stream writing through to ``stream`` with ``secret`` replaced
    by ``***`` (env.py or a revision printing the URL it was given)."""

    def __init__(self, stream, secret: str) -> None:
        self._stream, self._secret = stream, secret

    def write(self, text: str) -> int:
        return self._stream.write(text.replace(self._secret, "***"))

    def __getattr__(self, name):
        return getattr(self._stream, name)


@contextmanager
def scrubbed_output(secret: str | None):
    """Within this block ``secret`` never reaches sys.stdout/sys.stderr."""
    if not secret:
        yield
        return
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Scrubbing(sys.stdout, secret), _Scrubbing(sys.stderr, secret)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def scrub(result: dict, secret: str | None) -> dict:
    """``result`` with ``secret`` replaced by ``***`` in its text fields."""
    if not secret:
        return result
    return {key: value.replace(secret, "***") if isinstance(value, str) else value
            for key, value in result.items()}
