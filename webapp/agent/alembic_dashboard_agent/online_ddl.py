"""The online-DDL algorithm and LOCK level a rehearsal's statements actually
got (MySQL/MariaDB), for the forecast's check (issue 19, item 4).

On the scratch copy only (:mod:`.dry_run`'s ``_run``), each ``ALTER TABLE``,
``CREATE INDEX`` and ``DROP INDEX`` the migration issues is first re-issued
with an explicit clause, most online first (:data:`LADDER`: INSTANT, INPLACE
with LOCK=NONE, INPLACE LOCK=SHARED, COPY LOCK=SHARED, then the same with
LOCK=EXCLUSIVE); the first clause the server accepts did the work and is what
was observed. The server refuses a clause it cannot honour before doing
anything (errors 1845/1846, ``ER_ALTER_OPERATION_NOT_SUPPORTED``: the table is
unchanged, checked by tests/test_forecast_rehearsal_mysql.py), so a refused
clause changes nothing. When every clause is refused the statement runs as
written. Any other error (a syntax the clause does not fit, a real failure)
stops the probing: the statement then runs as written and fails, or not, as
it would have.

The accepted clause runs on a second DB-API cursor of the statement's own
connection (same session, same settings, just checked by the rehearsal's
connection guard, and an account with rights on the scratch schema only);
the statement SQLAlchemy then sends is the no-op ``DO 0``. Statements on a
connection to any other database than the scratch copy are never touched.
``DROP INDEX i ON t`` takes no ALGORITHM clause on MariaDB: it is re-issued as
``ALTER TABLE t DROP INDEX i``, the same operation. A statement that names an
``ALGORITHM=`` or ``LOCK=`` itself is left as written (not observed).

Standard library and SQLAlchemy only (the agent runs in the target's interpreter).
"""

from __future__ import annotations

import re

#: (algorithm, lock) clauses tried in this order, the most online first
LADDER = (("INSTANT", "NONE"), ("INPLACE", "NONE"), ("INPLACE", "SHARED"), ("COPY", "SHARED"),
          ("INSTANT", "EXCLUSIVE"), ("INPLACE", "EXCLUSIVE"), ("COPY", "EXCLUSIVE"))
REFUSED = (1845, 1846)  # ER_ALTER_OPERATION_NOT_SUPPORTED(_REASON): refused before any work
NO_OP = "DO 0"
_MAX_STATEMENTS = 500
_STATEMENT_MAX = 200
_ALTER_RE = re.compile(r"^\s*ALTER\s+(?:ONLINE\s+|IGNORE\s+)*TABLE\s", re.I)
_CREATE_INDEX_RE = re.compile(
    r"^\s*CREATE\s+(?:OR\s+REPLACE\s+)?(?:UNIQUE\s+|FULLTEXT\s+|SPATIAL\s+)?INDEX\s", re.I)
_DROP_INDEX_RE = re.compile(r"^\s*DROP\s+INDEX\s+(?:IF\s+EXISTS\s+)?(`[^`]+`|[\w$]+)\s+ON\s+"
                            r"(`[^`]+`(?:\.`[^`]+`)?|[\w$.]+)\s*$", re.I)
_NAMES_CLAUSE_RE = re.compile(r"\b(?:ALGORITHM|LOCK)\s*=", re.I)


def clause(algorithm: str, lock: str) -> str:
    """``"ALGORITHM=INPLACE, LOCK=NONE"``: the forecast's ``lock`` text."""
    return f"ALGORITHM={algorithm}, LOCK={lock}"


def variants(statement: str, mariadb: bool = True) -> list[tuple[str, str]]:
    """``[(clause, statement with that clause)]`` in :data:`LADDER` order for
    an ALTER TABLE / CREATE INDEX / DROP INDEX ``statement``; [] for any
    other statement, or one that names ALGORITHM or LOCK itself. On MySQL
    (``mariadb`` False) INSTANT takes no LOCK clause (only its default)."""
    text = statement.strip().rstrip(";").rstrip()
    if _NAMES_CLAUSE_RE.search(text):
        return []
    if found := _DROP_INDEX_RE.match(text):
        text = f"ALTER TABLE {found.group(2)} DROP INDEX {found.group(1)}"
    elif not _ALTER_RE.match(text) and not _CREATE_INDEX_RE.match(text):
        return []
    sep = " " if _CREATE_INDEX_RE.match(text) else ", "
    found = []
    for algorithm, lock in LADDER:
        if mariadb or algorithm != "INSTANT":
            found.append((clause(algorithm, lock), f"{text}{sep}ALGORITHM={algorithm}{sep}"
                                                   f"LOCK={lock}"))
        elif lock == "NONE":  # MySQL: ALGORITHM=INSTANT with its default lock
            found.append((clause(algorithm, lock), f"{text}{sep}ALGORITHM=INSTANT"))
    return found


def _error_number(exc: BaseException) -> int | None:
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


class AlgorithmWatch:
    """Context manager recording :attr:`observed`: ``[{"revision",
    "statement", "online_ddl", "refused"}]`` for each ALTER TABLE / CREATE
    INDEX / DROP INDEX run while it is active on the database of ``url``
    (the scratch copy): ``online_ddl`` the first clause of :data:`LADDER`
    the server accepted (``"ALGORITHM=INPLACE, LOCK=NONE"``; None: every
    clause refused, the statement ran as written), ``refused`` the clauses
    refused before it; ``revision`` the last of ``started``. Active only
    when ``url`` is MySQL/MariaDB."""

    def __init__(self, url: str, started: list[str]):
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        self.active = parsed.get_backend_name() in ("mysql", "mariadb")
        self.database = parsed.database
        self.started = started
        self.observed: list[dict] = []

    def __enter__(self) -> AlgorithmWatch:
        if self.active:
            from sqlalchemy import event
            from sqlalchemy.engine import Engine

            event.listen(Engine, "before_cursor_execute", self._before, retval=True)
        return self

    def __exit__(self, *exc) -> None:
        if self.active:
            from sqlalchemy import event
            from sqlalchemy.engine import Engine

            event.remove(Engine, "before_cursor_execute", self._before)

    def _before(self, conn, cursor, statement, parameters, context, executemany):
        if executemany or len(self.observed) >= _MAX_STATEMENTS or \
                conn.engine.url.database != self.database:
            return statement, parameters
        tries = variants(statement, bool(getattr(conn.dialect, "is_mariadb", False)))
        if not tries:
            return statement, parameters
        refused: list[str] = []
        for name, text in tries:
            side = cursor.connection.cursor()
            try:
                side.execute(text, parameters)
            except Exception as exc:  # noqa: BLE001 - refused, or the statement's own error
                if _error_number(exc) not in REFUSED:
                    return statement, parameters  # run as written: it fails (or not) itself
                refused.append(name)
                continue
            finally:
                side.close()
            self._record(statement, name, refused)
            return NO_OP, parameters  # the accepted clause did the work
        self._record(statement, None, refused)
        return statement, parameters

    def _record(self, statement: str, accepted: str | None, refused: list[str]) -> None:
        self.observed.append({"revision": self.started[-1] if self.started else None,
                              "statement": " ".join(statement.split())[:_STATEMENT_MAX],
                              "online_ddl": accepted, "refused": refused})
