"""Current revision(s) of a target's database, read through Alembic.

Reads the version table with :class:`alembic.runtime.migration.MigrationContext`
on a short-timeout connection: no ``env.py`` runs, nothing is written. An
unreachable database is reported as such within :data:`CONNECT_TIMEOUT`
seconds (plus query time), never raised to the caller as a driver error.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.pool import NullPool

from ..agent.alembic_dashboard_agent.guards import sqlite_file
from ..agent.alembic_dashboard_agent.readonly import read_only_url
from .branches import BranchStatus, BranchStep, branch_statuses, branch_steps
from .history import History, HistoryCache, HistoryError, RevisionInfo
from .runner import TargetProcessError
from .targets import Target, TargetUrlMissing, redact_url, scrub_secrets

CONNECT_TIMEOUT = 2  # seconds; keeps "unreachable" under 3 s
QUERY_TIMEOUT = 5  # seconds


class DatabaseUnavailable(Exception):
    """The target's database cannot be read.

    ``error_class`` is the exception class name (e.g. ``OperationalError``);
    ``str(self)`` is a message with no password in it.
    """

    def __init__(self, message: str, error_class: str) -> None:
        self.error_class = error_class
        super().__init__(message)


def engine_options(url: str) -> dict:
    """Connection options for reading ``url``'s version table: bounded connect
    and query time, and a session the database itself keeps read-only
    (MySQL/MariaDB ``SET SESSION TRANSACTION READ ONLY``, PostgreSQL
    ``default_transaction_read_only``; SQLite opens read-only through
    :func:`read_only_url`)."""
    backend = make_url(url).get_backend_name()
    if backend in ("mysql", "mariadb"):
        return {"connect_args": {"connect_timeout": CONNECT_TIMEOUT,
                                 "read_timeout": QUERY_TIMEOUT,
                                 "init_command": "SET SESSION TRANSACTION READ ONLY"}}
    if backend == "postgresql":
        return {"connect_args": {"connect_timeout": CONNECT_TIMEOUT,
                                 "options": f"-c statement_timeout={QUERY_TIMEOUT * 1000} "
                                            "-c default_transaction_read_only=on"}}
    if backend == "sqlite":
        return {"connect_args": {"timeout": QUERY_TIMEOUT}}
    return {}


IDLE_CLOSE_SECONDS = 5.0  # pooled connections to a target closed after this long unused


class EngineCache:
    """One engine per target URL, whose pooled connections are closed once the
    target was not read for ``idle_seconds``: consecutive reads (a page of
    cards, a polling pipeline) reuse a connection (about 1 ms a read instead of
    6 ms on PostgreSQL and 27 ms on MariaDB here), and no idle connection is
    left holding a target's database (it would block its ``DROP DATABASE`` and
    count against its connection limit). A daemon thread per process closes
    them (started on first use, again after a fork)."""

    def __init__(self, idle_seconds: float = IDLE_CLOSE_SECONDS) -> None:
        self._lock = threading.Lock()
        self._engines: dict[str, Engine] = {}
        self._last_used: dict[str, float] = {}
        self._idle_seconds = idle_seconds
        self._closer_pid: int | None = None

    def _close_idle(self) -> None:
        """Forever: dispose the pools of engines unused for ``idle_seconds``."""
        while True:
            time.sleep(min(1.0, self._idle_seconds / 2))
            now = time.monotonic()
            with self._lock:
                idle = [url for url, used in self._last_used.items()
                        if now - used >= self._idle_seconds]
                for url in idle:
                    del self._last_used[url]
                    self._engines[url].dispose()

    def _start_closer(self) -> None:
        if self._closer_pid != os.getpid():  # threads do not survive a fork
            self._closer_pid = os.getpid()
            threading.Thread(target=self._close_idle, name="target-idle-close",
                             daemon=True).start()

    def get(self, url: str) -> Engine:
        """Return an engine for ``url`` (created on first use); its pooled
        connections are closed after ``idle_seconds`` without a ``get``.

        :raises DatabaseUnavailable: bad URL or driver not installed.
        """
        with self._lock:
            engine = self._engines.get(url)
            if engine is None:
                try:
                    backend = make_url(url).get_backend_name()
                    kwargs = engine_options(url)
                    if backend != "sqlite":
                        kwargs.update(pool_size=2, max_overflow=4, pool_pre_ping=True)
                    else:
                        kwargs["poolclass"] = NullPool
                    connect_url = read_only_url(url) if backend == "sqlite" else url
                    engine = create_engine(connect_url, **kwargs)
                except (ArgumentError, NoSuchModuleError, ValueError) as exc:
                    raise DatabaseUnavailable(
                        f"invalid database URL {redact_url(url)}: "
                        f"{scrub_secrets(str(exc), url)}", type(exc).__name__) from None
                except ImportError as exc:  # the URL names a driver we do not have
                    raise DatabaseUnavailable(
                        f"the database driver of {redact_url(url)} is not installed in the "
                        f"dashboard's environment ({exc}); install it there (the target's "
                        "own python may have it, but the dashboard reads the version table "
                        "itself)", type(exc).__name__) from None
                except Exception as exc:  # any other dialect refusal: this target only
                    raise DatabaseUnavailable(
                        f"cannot use database URL {redact_url(url)}: "
                        f"{scrub_secrets(str(exc), url)}", type(exc).__name__) from None
                self._engines[url] = engine
            self._last_used[url] = time.monotonic()
            self._start_closer()
            return engine

    def dispose(self) -> None:
        """Close all pooled connections (at shutdown or in tests)."""
        with self._lock:
            for engine in self._engines.values():
                engine.dispose()
            self._engines.clear()
            self._last_used.clear()


def current_heads(engine: Engine, version_table: str) -> tuple[str, ...]:
    """Read the version table: the database's current revision(s).

    :return: revision ids, empty when the table is missing or empty (base).
    :raises DatabaseUnavailable: connection or query failed; message scrubbed.
    """
    url = engine.url.render_as_string(hide_password=False)
    if engine.dialect.name == "sqlite":
        database = sqlite_file(engine.url.database)
        if database and not Path(database).exists():
            raise DatabaseUnavailable(
                f"database file does not exist: {database}", "FileNotFoundError")
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"version_table": version_table})
            return tuple(context.get_current_heads())
    except Exception as exc:
        message = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        text = message[0] if message else type(exc).__name__
        raise DatabaseUnavailable(scrub_secrets(text, url),
                                  type(getattr(exc, "orig", None) or exc).__name__) from None


@dataclass
class TargetStatus:
    """Everything the dashboard card and ``/api/v1/targets`` show for a target.

    ``current``/``heads`` are revision ids; ``pending`` is in apply order;
    ``error``/``error_class`` describe an unreachable database
    (``reachable`` False) or an unreadable script directory
    (``history_error``). ``revision_error`` says the version table holds
    revisions the script directory does not know (``unknown_current``): then
    nothing is pending *that we can tell*, and the target is not up to date.
    ``branches`` has one entry per branch label of the script directory
    (current and pending per labelled branch, unknown when the database is).
    ``elapsed`` is seconds spent.
    """

    target: Target
    reachable: bool = False
    current: tuple[str, ...] = ()
    heads: tuple[str, ...] = ()
    current_revisions: list[RevisionInfo] = field(default_factory=list)
    pending: list[RevisionInfo] = field(default_factory=list)
    unknown_current: tuple[str, ...] = ()
    error: str | None = None
    error_class: str | None = None
    history_error: str | None = None
    revision_error: str | None = None
    history: History | None = None
    branches: list[BranchStatus] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def multiple_heads(self) -> bool:
        """True when the script directory has more than one head."""
        return len(self.heads) > 1

    @property
    def no_revisions(self) -> str | None:
        """Why nothing is pending when the script directory has no revision
        at all (:meth:`History.no_revisions_reason`: "no revisions found in
        <locations>"), else None. Such a target is never "up to date"."""
        return self.history.no_revisions_reason() if self.history is not None else None

    @property
    def up_to_date(self) -> bool:
        """True when reachable, nothing is pending and the script directory
        has revisions (zero revisions: :attr:`no_revisions` says why)."""
        return self.reachable and not self.pending and not self.unknown_current \
            and not self.revision_error and not self.no_revisions

    @property
    def problem(self) -> str | None:
        """The one message to show beside the fixed fields (the API's ``error``):
        unreachable database, unknown revision in the version table, or
        unreadable script directory — in that order — else None."""
        return self.error or self.revision_error or self.history_error

    @property
    def branch_steps(self) -> list[BranchStep]:
        """One-step upgrade/downgrade identifiers per branch when the database
        is at several current revisions (:func:`branch_steps`); empty when it
        is at one, unreachable, or at a revision the script directory lacks."""
        if not self.reachable or self.unknown_current or self.history is None:
            return []
        return branch_steps(self.history, self.current)


def unknown_revision_message(unknown: Iterable[str], history: History) -> str:
    """Why a version table holding ``unknown`` revisions has no pending list:
    Alembic itself stops there ("Can't locate revision"), so upgrade,
    downgrade and plans cannot run until the script directory has them."""
    ids = ", ".join(unknown)
    plural = "s" if "," in ids else ""
    locations = ", ".join(str(p) for p in history.version_locations) or "none"
    return (f"unknown revision{plural} {ids} in the version table: not in the script "
            f"directory (version locations: {locations}). Alembic cannot upgrade or "
            "downgrade from there; a version location may be missing from the ini "
            "(version_locations), or the database was migrated by another branch of "
            "the code")


def target_status(target: Target, histories: HistoryCache, engines: EngineCache,
                  url_for: Callable[[Target], str] | None = None) -> TargetStatus:
    """Compute one target's status; never raises for database or file problems.

    Data: the script directory (via ``histories``) and the version table
    (via a connection from ``engines``). ``url_for`` resolves the database
    URL (default :meth:`Target.database_url`; Flask-Migrate apps ask the app).
    """
    started = time.monotonic()
    status = TargetStatus(target=target)
    try:
        status.history = histories.get(target)
        status.heads = status.history.heads
    except HistoryError as exc:
        status.history_error = str(exc)
    try:
        url = url_for(target) if url_for else target.database_url()
        status.current = current_heads(engines.get(url), target.version_table)
        status.reachable = True
    except TargetUrlMissing as exc:
        status.error, status.error_class = str(exc), "ConfigurationError"
    except TargetProcessError as exc:
        status.error = f"the app could not be loaded: {exc}"
        status.error_class = exc.error_type
    except DatabaseUnavailable as exc:
        status.error, status.error_class = str(exc), exc.error_class
    if status.reachable and status.history is not None:
        known = [r for r in status.current if r in status.history.by_id]
        status.unknown_current = tuple(r for r in status.current if r not in status.history.by_id)
        status.current_revisions = [status.history.by_id[r] for r in known]
        if status.unknown_current:
            status.revision_error = unknown_revision_message(status.unknown_current,
                                                             status.history)
        else:
            try:
                status.pending = status.history.pending(status.current)
            except HistoryError as exc:
                status.history_error = str(exc)
    if status.history is not None:
        known = status.reachable and not status.unknown_current
        status.branches = branch_statuses(status.history, status.current if known else None)
    status.elapsed = time.monotonic() - started
    return status


def all_statuses(targets: Iterable[Target], histories: HistoryCache,
                 engines: EngineCache, url_for: Callable[[Target], str] | None = None
                 ) -> list[TargetStatus]:
    """Statuses of many targets, computed in parallel so one slow database
    does not delay the others beyond its own timeout. Order is preserved."""
    targets = list(targets)
    if not targets:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(targets))) as pool:
        return list(pool.map(lambda t: target_status(t, histories, engines, url_for), targets))
