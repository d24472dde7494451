"""Run Alembic for a target in a separate process (its own interpreter).

The target's ``env.py`` may reconfigure logging and import the target's
code; running it in a child process keeps both out of the dashboard. The
child is the agent package (``python webapp/agent``, see
:mod:`webapp.agent.alembic_dashboard_agent`), so the target's interpreter
needs only alembic and SQLAlchemy.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..agent import AGENT_DIR
from ..agent.alembic_dashboard_agent.fork_client import ForkServers
from ..agent.alembic_dashboard_agent.launch import (
    Standby,
    dismiss,
    launch_key,
    read_launch,
    spawn_prepared_run,
)
from .targets import Target, scrub_secrets

# re-exported: the one way to start a prepared run (at once, or through a standby)
__all__ = ["Standby", "dismiss", "launch_key", "read_launch", "spawn_prepared_run"]

# Warm agents for this process's read operations (plans, offline SQL, drift,
# previews): each read's agent is forked from a fork server that has Python
# and Alembic started already (one per interpreter and start-up settings).
# No server until create_app sets a limit (configure_agent_forkservers,
# DASHBOARD_AGENT_STANDBYS).
AGENT_FORKSERVERS = ForkServers(limit=0)


def configure_agent_forkservers(limit: int) -> None:
    """Keep at most ``limit`` agent fork servers for this process's read
    operations (0: every operation starts its agent cold); servers over
    the new limit are stopped."""
    AGENT_FORKSERVERS.limit = limit
    if limit == 0:
        AGENT_FORKSERVERS.close()


DEFAULT_TIMEOUT = 60.0  # seconds
BLOCKED_FILE = "blocked.json"  # in a run's folder: who blocks its migration now


def read_blocked(folder: Path) -> dict | None:
    """What the agent's blocked-by watch last wrote for the run prepared in
    ``folder``: ``{"session", "waiting", "blockers": [...], "seen": [...]}``
    (see :mod:`webapp.agent.alembic_dashboard_agent.blockers`), or None
    when it wrote nothing (the migration was never blocked, or SQLite)."""
    try:
        return json.loads((folder / BLOCKED_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def cancel_blocker(target: Target, *, url: str, session: int, pid: int) -> dict:
    """Cancel the current query of session ``pid`` on ``target``'s database,
    only if it blocks the migration's session ``session`` now (checked by
    the agent on the database; ``pg_cancel_backend`` / ``KILL QUERY``).

    :return: ``{"blocking": bool, "cancelled": bool}``.
    :raises TargetProcessError: the agent failed (database unreachable...).
    """
    return run_agent(target, {"op": "cancel_blocker", "session": session, "pid": pid},
                     url=url, timeout=15).data


class TargetProcessError(Exception):
    """The target-side process failed.

    ``error_type`` is the exception class raised there (e.g.
    ``ModuleNotFoundError``), ``traceback`` its last lines, ``output`` what it
    printed; all scrubbed of the database URL and password. ``phase`` is
    where it failed when the agent knows: "offline" or "rehearsal".
    """

    def __init__(self, message: str, error_type: str = "Error",
                 traceback: list[str] | None = None, output: str = "",
                 phase: str | None = None) -> None:
        self.error_type = error_type
        self.phase = phase
        self.traceback = traceback or []
        self.output = output
        super().__init__(message)

    @property
    def missing_env_py(self) -> str | None:
        """The path of the script directory's ``env.py`` when the failure is
        that this file does not exist (see :func:`missing_env_py`), else None."""
        return missing_env_py(self.error_type, str(self))

    @property
    def hint(self) -> str | None:
        """A suggestion for the common failures Alembic users meet."""
        text = f"{self.error_type}: {self}"
        if self.missing_env_py:
            return ("Alembic runs the env.py of the script directory (script_location in "
                    "alembic.ini, or the migrations directory of a Flask-Migrate app): "
                    "restore that file (`alembic init` / `flask db init` writes one), or "
                    "point the target at the directory that has it.")
        if self.error_type in ("ModuleNotFoundError", "ImportError"):
            return ("env.py could not import the target's code. Set `cwd` (or "
                    "`prepend_sys_path` in alembic.ini) so the app's package is on "
                    "sys.path, and `python` to the project's virtualenv interpreter.")
        if "requires a length on dialect mysql" in text:
            return ("MySQL/MariaDB needs a length for every VARCHAR: use "
                    "String(255) instead of String() in the models.")
        if "Target database is not up to date" in text:
            return ("Autogenerate compares the models with a database at head: upgrade "
                    "the target to its head(s) first (see its pending revisions).")
        if "Unknown database" in text or ("database" in text and "does not exist" in text):
            return ("The database does not exist yet. Create it (CREATE DATABASE ...) "
                    "before running migrations or autogenerate.")
        return None


CONNECT_TIMEOUT = 10  # seconds, for env.py's own connections

# What Alembic raises when the script directory has no env.py
# (alembic.util.pyfiles.load_python_file, called by ScriptDirectory.run_env)
_NO_ENV_PY = re.compile(r"(?:env\.py is missing: no file |Can't find Python file )"
                        r"(?P<path>.*[\\/]env\.py)\b.*", re.S)


def missing_env_py(error_type: str, message: str) -> str | None:
    """The ``env.py`` path Alembic looked for and did not find, or None.

    :param error_type: the exception class raised in the target's process;
        only ``ImportError`` qualifies (an env.py that imports a missing module
        raises ``ModuleNotFoundError`` or an ``ImportError`` of another text).
    :param message: its message: Alembic's ``Can't find Python file <path>``,
        or the one :func:`explain_missing_env_py` made of it.
    """
    if error_type != "ImportError":
        return None
    found = _NO_ENV_PY.fullmatch(message.strip())
    return found.group("path") if found else None


def explain_missing_env_py(error_type: str, message: str) -> str:
    """``message``, said plainly when it is Alembic's "Can't find Python file
    .../env.py": env.py is missing, and where it was looked for (the
    script_location's env.py, or the Flask-Migrate directory's). Any other
    message is returned as is."""
    path = missing_env_py(error_type, message)
    if path is None or message.startswith("env.py is missing"):
        return message
    return (f"env.py is missing: no file {path} (Alembic runs the env.py of the "
            "script directory, and there is none there)")


def target_payload(target: Target) -> dict:
    """How the helper finds the target's Alembic config: its ini, or its
    Flask-Migrate app and migrations directory."""
    return {"alembic_ini": str(target.alembic_ini) if target.alembic_ini else None,
            "ini_section": target.ini_section, "version_table": target.version_table,
            "flask_app": target.flask_app,
            "directory": str(target.directory) if target.directory else None}


# What a target's process keeps of ours: where programs and the home folder
# are, the locale and time zone, the temporary folder, the user, and what
# Python itself needs on Windows. Nothing else: our environment holds the
# dashboard's secrets (DASHBOARD_SECRET_KEY, DASHBOARD_ADMIN_PASSWORD, its
# database, broker and OIDC secrets) and every other target's URL, and
# whatever a target's code prints lands in a job log.
BASE_ENVIRONMENT = ("PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP",
                    "USER", "LOGNAME", "SYSTEMROOT", "SYSTEMDRIVE", "WINDIR", "COMSPEC",
                    "PATHEXT", "USERPROFILE", "APPDATA", "LOCALAPPDATA",
                    # Python's own switch (no secret): with it set for the dashboard,
                    # looking at a target leaves no __pycache__ in its versions folder
                    "PYTHONDONTWRITEBYTECODE")


def _base_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The part of ``environ`` every target's process keeps
    (:data:`BASE_ENVIRONMENT` and the ``LC_*`` locale variables)."""
    return {name: value for name, value in environ.items()
            if name in BASE_ENVIRONMENT or name.startswith("LC_")}


def target_environment(target: Target, url: str | None,
                       environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The complete environment of ``target``'s process, for one operation.

    Only: the minimal base of ``environ`` (:data:`BASE_ENVIRONMENT`, ``LC_*``),
    the operation's ``url`` under the target's own ``url_env`` name (an
    env.py that reads it gets the URL of this operation, e.g. the read-only
    account's on a read path), the target's ``[env]`` table, unbuffered
    output and a fixed hash seed — Alembic iterates sets when it orders merge
    and batch statements, and a plan's SQL must be identical each time it is
    computed for its hash to pin a confirmation. Never a ``DASHBOARD_*``
    setting nor another target's URL.

    :param url: the database URL given for this operation, or None.
    :param environ: the environment the base is taken from; default ``os.environ``.
    :return: ``{name: value}``, to pass as is to the process (not merged).
    """
    env = _base_environment(os.environ if environ is None else environ)
    env.update(target.env)
    if url and target.url_env:
        env[target.url_env] = url
    env.update({"PYTHONUNBUFFERED": "1", "PYTHONHASHSEED": "0"})
    return env


def _helper_request(target: Target, url: str | None, request: dict) -> dict:
    """The JSON the helper reads: where the target's config is, the URL, the op."""
    return {**target_payload(target), "url": with_connect_timeout(url) if url else url,
            **request}


def _write_private_json(path: Path, data: dict) -> None:
    """Write ``data`` readable by this user only (it may hold a database URL)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f)


def with_connect_timeout(url: str) -> str:
    """``url`` with a driver connect timeout added when it has none, so an
    unreachable database fails a job instead of hanging it (MySQL, PostgreSQL)."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:
        return url
    if parsed.get_backend_name() in ("mysql", "mariadb", "postgresql") \
            and "connect_timeout" not in parsed.query:
        parsed = parsed.update_query_dict({"connect_timeout": str(CONNECT_TIMEOUT)})
        return parsed.render_as_string(hide_password=False)
    return url


@dataclass
class HelperResult:
    """What the target-side process returned: ``data`` from its JSON result,
    ``output`` its captured stdout+stderr (scrubbed)."""

    data: dict = field(default_factory=dict)
    output: str = ""


def run_agent(target: Target, request: dict, *, url: str | None,
                      timeout: float = DEFAULT_TIMEOUT) -> HelperResult:
    """Run one operation of the agent for ``target``.

    :param request: operation fields (see the agent's docstrings); the
        ini, section, URL and version table are added here.
    :param url: the database URL (kept out of argv: passed in a 0600 file).
    :param timeout: seconds before the process is killed.
    :raises TargetProcessError: the process failed, timed out or could not start.
    """
    python = target.python or sys.executable
    with tempfile.TemporaryDirectory(prefix="alembic-dashboard-") as tmp:
        result_path = Path(tmp, "result.json")
        _write_private_json(Path(tmp, "request.json"), _helper_request(target, url, request))
        launch = launch_spec(target, url, Path(tmp))
        try:
            proc = AGENT_FORKSERVERS.spawn(launch)
        except FileNotFoundError:
            raise TargetProcessError(f"interpreter not found: {python}",
                                     "FileNotFoundError") from None
        try:
            stdout, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, _ = proc.communicate()
            output = scrub_secrets((stdout or b"").decode("utf-8", "replace"), url)
            raise TargetProcessError(f"timed out after {timeout:g} s", "TimeoutError",
                                     output=output) from None
        output = scrub_secrets(stdout.decode("utf-8", "replace"), url)
        try:
            result = json.loads(result_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            tail = output.strip().splitlines()[-12:]
            raise TargetProcessError(
                f"the target process exited with status {proc.returncode} "
                "without a result", "ProcessError", tail, output) from None
    if not result.get("ok"):
        error = result.get("error") or {}
        error_type = error.get("type", "Error")
        raise TargetProcessError(
            explain_missing_env_py(error_type,
                                   scrub_secrets(error.get("message", "unknown error"), url)),
            error_type,
            [scrub_secrets(line, url) for line in error.get("traceback", [])],
            output, error.get("phase"))
    result.pop("ok", None)
    return HelperResult(data=result, output=output)


def offline_sql(target: Target, revision: str, direction: str, *, url: str | None) -> str:
    """Offline SQL (``--sql``) of one revision's upgrade or downgrade.

    :param direction: "upgrade" (from its down revisions to it) or
        "downgrade" (from it to its down revisions).
    :return: SQL text in the dialect of ``url``.
    :raises TargetProcessError: env.py or the migration failed.
    """
    result = run_agent(target, {"op": "offline_sql", "revision": revision,
                                        "direction": direction}, url=url)
    return result.data["sql"]


def run_command(target: Target, command: str, revision: str, *, url: str | None,
                sql: bool = False, timeout: float = DEFAULT_TIMEOUT) -> HelperResult:
    """Run ``alembic upgrade|downgrade|stamp revision`` for ``target``.

    :raises TargetProcessError: the command failed (output included).
    """
    return run_agent(target, {"op": "command", "command": command,
                                      "revision": revision, "sql": sql},
                             url=url, timeout=timeout)


def write_run_request(target: Target, command: str, revision: str, *, url: str,
                      lock_name: str, folder: Path, extra: dict | None = None) -> None:
    """Prepare a run of ``alembic command revision`` in ``folder``.

    Writes ``request.json`` (mode 0600: it holds the URL) and ``launch.json``
    (0600 too: interpreter, working directory, and the complete environment
    of :func:`target_environment`, which may hold the URL) so that
    :func:`spawn_prepared_run` can start it with nothing but the standard
    library — the job process starts the migration before importing the app.
    The order carries the target's lock guard (``guard``: its policy's
    ``lock_timeout``, ``statement_timeout``, ``lock_retries``) and where the
    agent writes who blocks the migration while it runs (``folder/blocked.json``,
    :func:`read_blocked`).
    """
    _write_private_json(folder / "request.json", _helper_request(target, url, {
        "op": "run", "command": command, "revision": revision, "lock_name": lock_name,
        "guard": target.policy.lock_guard, "watch_file": str(folder / BLOCKED_FILE),
        **(extra or {})}))
    write_launch(launch_spec(target, url, folder), folder)


def launch_spec(target: Target, url: str | None, folder: Path) -> dict:
    """How a run on ``target`` (database at ``url``) prepared in ``folder``
    is started: ``{"argv": [python, agent, folder/request.json,
    folder/result.json], "cwd", "env", "url_env"}`` (``env`` from
    :func:`target_environment`); its
    :func:`~webapp.agent.alembic_dashboard_agent.launch.launch_key` says
    which standby can start it."""
    return {"argv": [target.python or sys.executable, str(AGENT_DIR),
                     str(folder / "request.json"), str(folder / "result.json")],
            "cwd": str(target.working_directory), "env": target_environment(target, url),
            "url_env": target.url_env}


def write_launch(launch: dict, folder: Path) -> None:
    """``folder/launch.json`` (0600, it may hold the URL): ``launch`` from
    :func:`launch_spec`, for :func:`read_launch` in a process that imports
    nothing else (a job process, a standby job process)."""
    _write_private_json(folder / "launch.json", launch)


def start_run_process(target: Target, command: str, revision: str, *, url: str,
                      lock_name: str, folder: Path, extra: dict | None = None
                      ) -> subprocess.Popen:
    """:func:`write_run_request` then :func:`spawn_prepared_run`."""
    write_run_request(target, command, revision, url=url, lock_name=lock_name,
                      folder=folder, extra=extra)
    return spawn_prepared_run(folder)


def app_database_url(target: Target) -> str:
    """The database URL a ``flask_app`` target's own config gives (target-side).

    :raises TargetProcessError: the app cannot be imported or created.
    """
    return run_agent(target, {"op": "database_url"}, url=None).data["url"]


def load_identifiers(target: Target, paths: list[Path], *, url: str | None = None
                     ) -> dict[str, dict]:
    """Identifiers of revision files that compute them, read by running the
    files in the target's process: ``{path: {"revision", "down_revision", ...}}``.

    :raises TargetProcessError: a file failed to import.
    """
    return run_agent(target, {"op": "identifiers", "paths": [str(p) for p in paths]},
                             url=url).data["identifiers"]
