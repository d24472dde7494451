"""Runs Alembic for one target inside the target's own process.

This file is executed as a script by the target's interpreter
(``python target_helper.py REQUEST.json RESULT.json``), in the target's
working directory and environment. It may import only what a project that
uses Alembic already has: the standard library, ``alembic`` and
``sqlalchemy``. It never imports the dashboard.

Request (JSON object):
  ``op``            "offline_sql" | "command"
  ``alembic_ini``   path of the ini; ``ini_section`` (default "alembic")
  ``url``           database URL, set as ``sqlalchemy.url`` like Alembic's
                    templates expect (not logged, not echoed back)
  ``version_table`` applied as default to ``context.configure``
  offline_sql: ``revision``, ``direction`` ("upgrade" | "downgrade")
  command:     ``command`` ("upgrade" | "downgrade" | "stamp"),
               ``revision``, ``sql`` (bool)

Result (JSON object written to RESULT.json):
  ``{"ok": true, "sql": "...", "current": [...]}`` or
  ``{"ok": false, "error": {"type", "message", "traceback": [lines]}}``.
Everything Alembic prints and everything ``env.py`` logs goes to this
process's stdout/stderr, which the caller captures as the log.
"""

from __future__ import annotations

import io
import json
import sys
import traceback


def _config(request: dict, buffer: io.StringIO):
    from alembic.config import Config

    config = Config(request["alembic_ini"], ini_section=request.get("ini_section", "alembic"),
                    output_buffer=buffer, stdout=sys.stdout)
    if request.get("url"):
        # configparser interpolation: a literal % must be doubled
        config.set_main_option("sqlalchemy.url", request["url"].replace("%", "%%"))
    return config


def _default_version_table(version_table: str) -> None:
    """Make an unmodified env.py use the version table named in the targets file."""
    from alembic.runtime.environment import EnvironmentContext

    original = EnvironmentContext.configure

    def configure(self, *args, **kwargs):
        kwargs.setdefault("version_table", version_table)
        return original(self, *args, **kwargs)

    EnvironmentContext.configure = configure


def offline_sql(request: dict) -> dict:
    """Offline SQL of one revision's upgrade (from its down revisions) or downgrade."""
    from alembic.runtime.environment import EnvironmentContext
    from alembic.runtime.migration import MigrationStep
    from alembic.script import ScriptDirectory

    buffer = io.StringIO()
    config = _config(request, buffer)
    script = ScriptDirectory.from_config(config)
    revision = script.get_revision(request["revision"])
    if revision is None:
        raise LookupError(f"no such revision: {request['revision']}")
    if request["direction"] == "upgrade":
        step = MigrationStep.upgrade_from_script(script.revision_map, revision)
        starting = list(revision._versioned_down_revisions) or None
        destination = revision.revision
    else:
        step = MigrationStep.downgrade_from_script(script.revision_map, revision)
        starting = [revision.revision]
        destination = ",".join(revision._versioned_down_revisions) or "base"

    def steps(heads, context):
        return [step]

    from alembic.util import CommandError

    try:
        with EnvironmentContext(config, script, fn=steps, as_sql=True, starting_rev=starting,
                                destination_rev=destination):
            script.run_env()
    except CommandError as exc:
        if "requires a live database connection" not in str(exc) \
                or not str(request.get("url", "")).startswith("sqlite"):
            raise
        prepare = [revision.revision]
        if request["direction"] == "upgrade":
            prepare = list(revision._versioned_down_revisions) + list(
                revision._resolved_dependencies)
        return {"sql": _sqlite_rehearsal(request, prepare, step, destination),
                "rehearsal": True}
    return {"sql": buffer.getvalue(), "rehearsal": False}


def _sqlite_rehearsal(request: dict, prepare: list, step, destination) -> str:
    """SQL of one step captured from running it on a scratch SQLite database.

    Alembic cannot render batch operations offline on SQLite (they reflect the
    table), so the step is run for real on an empty temporary database
    brought to the step's starting revision(s), and the statements sent to it
    are recorded. The target's own database is not touched.
    """
    import os
    import tempfile

    from alembic import command as alembic_command
    from alembic.runtime.environment import EnvironmentContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    with tempfile.TemporaryDirectory(prefix="alembic-rehearsal-") as tmp:
        scratch = dict(request, url="sqlite:///" + os.path.join(tmp, "scratch.db"))
        config = _config(scratch, io.StringIO())
        for rev in prepare:
            alembic_command.upgrade(config, rev)
        captured: list[str] = []
        recording = False

        def record(conn, cursor, statement, parameters, context, executemany):
            head = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else ""
            if recording and head not in ("SELECT", "PRAGMA"):
                text = statement.strip()
                if parameters:
                    text += f"\n-- parameters: {parameters!r}"
                captured.append(text + ";")

        event.listen(Engine, "before_cursor_execute", record)
        script = ScriptDirectory.from_config(config)

        def steps(heads, context):
            nonlocal recording
            recording = True
            return [step]

        with EnvironmentContext(config, script, fn=steps, destination_rev=destination):
            script.run_env()
        event.remove(Engine, "before_cursor_execute", record)
    header = ("-- Alembic cannot render batch operations as offline SQL on SQLite;\n"
              "-- these statements were captured from a rehearsal on a scratch database.\n")
    return header + "\n\n".join(captured) + "\n"


def command(request: dict) -> dict:
    """Run ``alembic upgrade|downgrade|stamp REVISION [--sql]``."""
    from alembic import command as alembic_command

    buffer = io.StringIO()
    config = _config(request, buffer)
    name = request["command"]
    if name not in ("upgrade", "downgrade", "stamp"):
        raise ValueError(f"unsupported command {name!r}")
    getattr(alembic_command, name)(config, request["revision"], sql=bool(request.get("sql")))
    return {"sql": buffer.getvalue() if request.get("sql") else None}


OPERATIONS = {"offline_sql": offline_sql, "command": command}


def main(argv: list[str]) -> int:
    request_path, result_path = argv[1], argv[2]
    with open(request_path, encoding="utf-8") as f:
        request = json.load(f)
    try:
        if request.get("version_table"):
            _default_version_table(request["version_table"])
        result = {"ok": True, **OPERATIONS[request["op"]](request)}
    except BaseException as exc:  # report everything, including SystemExit from env.py
        frames = traceback.format_exception(type(exc), exc, exc.__traceback__)
        result = {"ok": False, "error": {
            "type": type(exc).__name__,
            "message": str(exc),
            "traceback": "".join(frames).splitlines()[-12:],
        }}
        traceback.print_exc()
    with open(result_path, "w", encoding="utf-8") as f:
        json.dump(result, f)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
