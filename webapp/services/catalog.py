"""The catalog of targets: their status, history and offline SQL, with caches.

One :class:`Catalog` lives in ``app.extensions["alembic_dashboard"]``; views
reach it with :func:`get_catalog`.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path

import cachetools
from flask import current_app

from ..core import demo
from ..core.history import History, HistoryCache, HistoryError
from ..core.runner import app_database_url, load_identifiers, offline_sql
from ..core.status import EngineCache, TargetStatus, all_statuses, target_status
from ..core.targets import Target, load_targets

#: the on-disk cache of parsed revision files, in the instance folder
HISTORY_CACHE_FOLDER = "history-cache"


class Memo:
    """A thread-safe get-or-compute over a :mod:`cachetools` cache.

    ``Memo(LRUCache(256))`` keeps the 256 most recently used values;
    ``Memo(TTLCache(256, ttl=60))`` forgets each value 60 s after it was
    stored. Two threads missing the same key may both compute it; the last
    one stored wins (values are pure results, so that is harmless).
    """

    def __init__(self, cache: cachetools.Cache) -> None:
        self._cache = cache
        self._lock = threading.Lock()

    def get_or_compute(self, key: Hashable, compute: Callable[[], object]):
        """The value cached under ``key``, or ``compute()`` stored under it."""
        with self._lock:
            try:
                return self._cache[key]
            except KeyError:
                pass
        value = compute()
        with self._lock:
            self._cache[key] = value
        return value

    def forget(self, key: Hashable) -> None:
        """Drop ``key`` (no error when it is not cached)."""
        with self._lock:
            self._cache.pop(key, None)


class Catalog:
    """Targets plus per-process caches.

    ``targets`` maps name → :class:`Target` in file order; ``is_demo`` is True
    when no ``DASHBOARD_TARGETS`` was given. ``history_cache_dir``: the folder
    of the on-disk cache of parsed revision files shared by every process of
    the dashboard (:class:`~webapp.core.history.ParseCache`); None: none.
    """

    def __init__(self, targets: Mapping[str, Target], *, is_demo: bool = False,
                 source: str | None = None, history_cache_dir: Path | None = None) -> None:
        self.targets = dict(targets)
        self.is_demo = is_demo
        self.source = source
        self.histories = HistoryCache(loader_for=lambda target: (
            lambda paths: load_identifiers(target, paths)), parse_cache=history_cache_dir)
        self._app_urls: dict[str, str] = {}
        self._app_urls_lock = threading.Lock()
        self.engines = EngineCache()
        self._sql = Memo(cachetools.LRUCache(256))
        self.fragments = Memo(cachetools.LRUCache(64))
        self.plans = Memo(cachetools.LRUCache(64))

    @classmethod
    def from_config(cls, config: Mapping, instance_path: Path) -> Catalog:
        """Load ``config["TARGETS_FILE"]``, or the bundled demo when unset.

        Parsed revision files are cached in ``config["HISTORY_CACHE_DIR"]``,
        by default ``instance_path/history-cache`` (an empty value: no disk
        cache), shared by the web workers and job processes of this instance.

        :raises TargetsFileError: invalid file.
        """
        cache_dir = config.get("HISTORY_CACHE_DIR", instance_path / HISTORY_CACHE_FOLDER)
        cache_dir = Path(cache_dir) if cache_dir else None
        path = config.get("TARGETS_FILE")
        if path:
            return cls(load_targets(path), source=str(Path(path).resolve()),
                       history_cache_dir=cache_dir)
        return cls(demo.demo_targets(instance_path), is_demo=True,
                   source=str(demo.DEMO_TARGETS_FILE), history_cache_dir=cache_dir)

    def get(self, name: str) -> Target | None:
        """The target called ``name``, or None."""
        return self.targets.get(name)

    def database_url(self, target: Target) -> str:
        """The target's database URL: from ``url_env``, or for a Flask-Migrate
        app without one, from the app's own config (asked once, target-side).

        :raises TargetUrlMissing: ``url_env`` unset.
        :raises TargetProcessError: the app cannot be loaded.
        """
        if target.url_env or not target.flask_app:
            return target.database_url()
        with self._app_urls_lock:
            cached = self._app_urls.get(target.name)
        if cached is None:
            cached = app_database_url(target)
            with self._app_urls_lock:
                self._app_urls[target.name] = cached
        return cached

    def read_url(self, target: Target) -> str:
        """The URL of the target's read paths (status, plans, offline SQL,
        the autogenerate preview, drift): its read-only account
        (``readonly_url_env``) when the targets file names one, else
        :meth:`database_url`. The agent makes every read connection
        read-only in the database either way.

        :raises TargetUrlMissing: the variable named is unset.
        :raises TargetProcessError: a Flask-Migrate app cannot be loaded.
        """
        return target.readonly_database_url() or self.database_url(target)

    def status(self, target: Target) -> TargetStatus:
        """Live status of one target (see :func:`core.status.target_status`)."""
        return target_status(target, self.histories, self.engines, self.read_url)

    def statuses(self, targets: list[Target] | None = None) -> list[TargetStatus]:
        """Live status of every target (or of ``targets``), in parallel, in order."""
        return all_statuses(self.targets.values() if targets is None else targets,
                            self.histories, self.engines, self.read_url)

    def history(self, target: Target) -> History:
        """Cached history of the target's script directory.

        :raises HistoryError: unreadable script directory.
        """
        return self.histories.get(target)

    def no_revisions(self, target: Target) -> str | None:
        """Why nothing can be done on ``target`` when its script directory has
        no revision at all ("no revisions found in <locations>...", see
        :meth:`History.no_revisions_reason`); None when it has revisions or
        cannot be read (that error is said elsewhere)."""
        try:
            return self.histories.get(target).no_revisions_reason()
        except HistoryError:
            return None

    def nothing_to_do(self, target: Target, current: Sequence[str], what: str = "do") -> str:
        """The refusal text of an empty plan: why (zero revisions), or where
        the database already is ("Nothing to do: the database is already at X.")."""
        reason = self.no_revisions(target)
        if reason:
            return f"Nothing to {what}: {reason}."
        return f"Nothing to {what}: the database is already at {', '.join(current) or 'base'}."

    def revision_sql(self, target: Target, history: History, revision: str,
                     direction: str) -> str:
        """Offline SQL of one revision, cached until its files or URL change.

        :raises TargetProcessError: env.py or the migration failed (not cached).
        """
        url = self.read_url(target)
        url_key = hashlib.sha256(url.encode()).hexdigest()
        key = (target.name, revision, direction, history.fingerprint, url_key)
        return self._sql.get_or_compute(
            key, lambda: offline_sql(target, revision, direction, url=url))


def get_catalog() -> Catalog:
    """The current app's :class:`Catalog`."""
    return current_app.extensions["alembic_dashboard"]
