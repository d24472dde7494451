"""The dashboard's agent inside a target's own process.

Executed as ``python webapp/agent REQUEST.json RESULT.json`` by the target's
interpreter, in the target's working directory and environment. It imports
only what a project that uses Alembic already has: the standard library,
``alembic`` and ``sqlalchemy`` (plus Flask and Flask-Migrate for
``flask_app`` targets); never the dashboard. Results come back as JSON
(:mod:`.protocol`); everything Alembic prints and env.py logs goes to this
process's stdout/stderr, which the dashboard captures as the log.

One module per kind of work: :mod:`.config` (the Alembic Config, the
Flask-Migrate app, the script directory), :mod:`.offline` (plans and
offline SQL), :mod:`.rehearsal` (scratch-copy runs), :mod:`.dry_run` (a
job's rehearsal on a scratch copy), :mod:`.run` (the locked online run),
:mod:`.autogen`, :mod:`.schema` (snapshots, drift), :mod:`.stairway` and
:mod:`.row_sample` (its row sample) and :mod:`.authoring`.
"""

from __future__ import annotations

import os
import sys

from . import (
    authoring,
    autogen,
    blockers,
    config,
    dry_run,
    offline,
    row_sample,
    run,
    schema,
    stairway,
    table_stats,
)
from .protocol import error_result, read_request, write_result

OPERATIONS = {
    "offline_sql": offline.offline_sql, "command": offline.command, "plan": offline.plan,
    "range_sql": offline.range_sql, "run": run.run, "database_url": config.database_url,
    "identifiers": config.identifiers, "script_directory": config.script_directory,
    "autogenerate": autogen.autogenerate, "revision": authoring.revision,
    "dry_run": dry_run.dry_run, "schema_snapshot": schema.schema_snapshot,
    "drift": schema.drift, "stairway": stairway.stairway, "cancel_blocker": blockers.cancel,
    "table_stats": table_stats.table_stats, "row_sample": row_sample.row_sample,
}


def standby() -> list[str]:
    """``python webapp/agent --standby``: a process started before its job.

    Imports what every run needs (Alembic, SQLAlchemy), then waits for one
    line on stdin — a JSON object ``{"args": [REQUEST.json, RESULT.json],
    "env": {...}}`` — takes ``env`` as its complete environment (the one it
    was started with lacks the database URL: one standby serves every target
    of the same project) and returns the argv to run it with. A warm worker
    keeps one such process per interpreter/working directory/environment,
    so a job does not wait for a Python start-up (see :class:`.launch.Standby`).

    :raises SystemExit: stdin closed without a request (the standby is not needed).
    """
    import json

    from .forkserver import warm_up

    warm_up()

    line = sys.stdin.readline()
    if not line.strip():
        raise SystemExit(0)
    order = json.loads(line)
    os.environ.clear()  # exactly the run's environment, as a cold start gets it
    os.environ.update(order["env"])
    request_path, result_path = order["args"]
    return [sys.argv[0], request_path, result_path]


def main(argv: list[str]) -> int:
    """``argv``: [program, REQUEST.json, RESULT.json] (or [program,
    "--standby"]: see :func:`standby`; or [program, "--forkserver", FD]: see
    :func:`.forkserver.serve`). Exit status 0 when the result is ok,
    1 otherwise; the result file is always written."""
    import traceback

    if argv[1:] == ["--standby"]:
        argv = standby()
    elif argv[1:2] == ["--forkserver"]:
        from . import forkserver

        argv = forkserver.serve(int(argv[2]))  # returns in each forked child
    request_path, result_path = argv[1], argv[2]
    try:
        request = read_request(request_path)
        config.patch_configure(request.get("version_table"))
        data = OPERATIONS[request["op"]](request)
        result = data if "ok" in data else {"ok": True, **data}
    except BaseException as exc:  # report everything, including SystemExit from env.py
        result = error_result(exc)
        traceback.print_exc(file=sys.stdout)
    write_result(result_path, result)
    return 0 if result["ok"] else 1
