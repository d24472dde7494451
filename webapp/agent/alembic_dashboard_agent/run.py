"""Op ``run``: the one place a target's migrations run online, under its lock."""

from __future__ import annotations

import io
import time
import traceback
from contextlib import contextmanager

from . import alembic_private
from .compensate import compensate, no_steps
from .config import CONFIGURE_HOOKS, VERSION_APPLY_HOOKS, alembic_config
from .database import current_heads
from .guarded import GuardedRun
from .journal import Journal
from .locks import TargetBusy, TargetLock
from .steps import file_sha256, step_id, steps_for


def _snapshot_into(result: dict, key: str, request: dict, url: str, version_table: str) -> None:
    """``result[key]`` = the database's schema snapshot (:mod:`.schema`), for
    the job's changelog entry, unless the request says ``snapshots: false``
    (or, for "schema_after", there is no "schema_before"); a failure to
    reflect is noted in ``result["schema_error"]`` and never fails the job."""
    from .schema import snapshot_url

    if not request.get("snapshots", True) or (
            key == "schema_after" and "schema_before" not in result):
        return
    try:
        result[key] = snapshot_url(url, version_table)
    except Exception as exc:  # noqa: BLE001 - the migration matters, the snapshot is a bonus
        result["schema_error"] = f"{type(exc).__name__}: {exc}"


@contextmanager
def _journalled(journal: Journal):
    """Journal every statement (:mod:`.journal`) while the block runs, once
    env.py configured a connection whose DDL is not transactional; outermost
    around the lock guard's retries (one line pair per statement)."""
    def on_configure(environment_context, connection) -> None:
        journal.enabled = not environment_context.get_context().impl.transactional_ddl

    CONFIGURE_HOOKS.append(on_configure)
    undo = alembic_private.wrap_impl_exec(journal.around)
    try:
        yield journal
    finally:
        undo()
        CONFIGURE_HOOKS.remove(on_configure)


class PlanChanged(Exception):
    """The database is no longer where the job's plan started."""


def _applied_step(info) -> dict:
    """An applied step (Alembic's MigrationInfo) as JSON."""
    if info.is_stamp:
        direction, revision = "stamp", ",".join(info.up_revision_ids) or "base"
    else:
        direction = "upgrade" if info.is_upgrade else "downgrade"
        revision = info.up_revision_id
    step = {"revision": revision, "direction": direction, "path": None, "sha256": None}
    if direction == "upgrade" and info.up_revision is not None:
        step.update(path=str(info.up_revision.path), sha256=file_sha256(info.up_revision.path))
    return step


def _moved_on_its_own(url: str, version_table: str, before: list[str],
                      result: dict) -> list[str] | None:
    """Read the current heads again once the target's Alembic config (and a
    Flask-Migrate app: its ``create_app()``) is loaded. When they are no longer
    ``before``, the target's own code migrated the database (e.g.
    ``flask_migrate.upgrade()`` on start): a warning goes to the log and to
    ``result["warnings"]``, and the new heads are returned; else None."""
    now = current_heads(url, version_table)
    if sorted(now) == sorted(before):
        return None
    warning = (f"the target's own code moved the database before the migration started "
               f"(from {', '.join(before) or 'base'} to {', '.join(now) or 'base'}, while "
               "its app or env was loaded, e.g. flask_migrate.upgrade() in create_app); "
               "those revisions were not applied by this job's migration")
    result.setdefault("warnings", []).append(warning)
    print(f"[dashboard] WARNING: {warning}", flush=True)
    return now


def _forget_rolled_back(applied_steps: list[dict], heads_after: list[list[str]], done: int,
                        at_attempt: list[str], now: list[str]) -> None:
    """After a rolled-back attempt (retried whole), drop the steps it
    reported applied that the database no longer has: those after the last
    step whose heads are the database's heads ``now`` (all of the attempt's
    when ``now`` is where it started, ``at_attempt``)."""
    keep = done if sorted(now) == sorted(at_attempt) else None
    for index in range(len(heads_after) - 1, done - 1, -1):
        if keep is None and heads_after[index] == sorted(now):
            keep = index + 1
    if keep is not None:
        del applied_steps[keep:], heads_after[keep:]


def run(request: dict) -> dict:
    """Op ``run`` (``command``, ``revision``, ``lock_name``, ``expect_current``):
    run ``alembic command revision`` online while holding the target lock.

    Always returns a result (``ok`` False on failure) with what is known:
    ``current_before``/``current_after``, the database's current revisions
    (``current_after_error`` when they could not be read at the end;
    ``current_before`` is read before the target's code is
    loaded, so what a Flask-Migrate app's ``create_app()`` migrates on its
    own counts; it is also named in ``warnings``), ``planned`` step ids, ``applied`` ids and
    ``applied_steps``, ``failed_revision`` — only for a revision whose
    migration had started — and ``failed_phase`` "env" when env.py failed
    before any migration began. ``busy`` when another process holds the lock.
    Each applied step has its ``seconds``. Unless ``snapshots`` is false,
    ``schema_before``/``schema_after`` are the schema snapshots
    (:mod:`.schema`) taken under the lock before the run and after it
    (``schema_error`` when one could not be taken).
    Under the target's lock guard (``guard``, :mod:`.guarded`): ``blocked_by``,
    ``lock_failure`` and ``invalid_indexes``; ``drop_invalid_indexes``
    (``[{"schema", "name"}]``) are dropped first; ``watch_file`` is where the
    blocked-by watch writes what it sees while the job runs.
    Where the DDL is not transactional (MySQL/MariaDB, SQLite) every statement
    is journalled on stdout as it starts and ends (:mod:`.journal`); with
    ``resume`` (``{"revision", "done": [{"position", "sha256"}]}``) the
    statements of a half-applied revision that already took effect are
    skipped (checked by hash), so the run resumes it from the next statement,
    stamps it as Alembic does, and goes on with the plan. ``command``
    "compensate" runs no revision: only ``compensate`` (:mod:`.compensate`).
    """
    from alembic.runtime.environment import EnvironmentContext
    from alembic.script import ScriptDirectory

    version_table = request.get("version_table") or "alembic_version"
    url = request["url"]
    lock = TargetLock(url, request["lock_name"])
    try:
        lock.acquire()
    except (TargetBusy, FileNotFoundError) as exc:
        return {"ok": False, "busy": isinstance(exc, TargetBusy), "error": {
            "type": type(exc).__name__, "message": str(exc), "traceback": []}}
    applied_steps: list[dict] = []
    heads_after: list[list[str]] = []  # the heads after each applied step
    started: list[str] = []  # ids of the steps whose migration began, in order
    started_at: list[float] = []  # time.monotonic() of each of those starts
    in_env = False
    guarded = GuardedRun(request, url)
    journal = Journal(lambda: started[-1] if len(started) > len(applied_steps) else None,
                      version_table, resume=request.get("resume"))
    failure: BaseException | None = None

    def on_apply(info, heads):
        applied_steps.append(_applied_step(info))
        # a step is applied only after fn pulled it: started_at has its start
        applied_steps[-1]["seconds"] = round(time.monotonic() - started_at[-1], 3)
        heads_after.append(sorted(heads))
        print(f"[dashboard] {applied_steps[-1]['direction']} {applied_steps[-1]['revision']} "
              f"done; heads now: {', '.join(sorted(heads)) or 'base'}", flush=True)

    result: dict = {"applied": [], "applied_steps": applied_steps}
    try:
        _snapshot_into(result, "schema_before", request, url, version_table)
        before = current_heads(url, version_table)
        result["current_before"] = before
        expected = request.get("expect_current")
        if expected is not None and sorted(expected) != sorted(before):
            raise PlanChanged(f"the database is at {', '.join(before) or 'base'}, but the "
                              f"plan was made at {', '.join(expected) or 'base'}")
        config = alembic_config(request, io.StringIO())  # a Flask-Migrate app is created here
        script = ScriptDirectory.from_config(config)
        command_name, revision = request["command"], request["revision"]
        plan_steps = no_steps if command_name == "compensate" else steps_for
        # ids only: reading and hashing every file again here costs time the CLI does not spend
        planned = [step_id(s) for s in plan_steps(script, command_name, revision, before)]
        at_start = _moved_on_its_own(url, version_table, before, result)
        if at_start is not None:
            remaining = [step_id(s) for s in plan_steps(script, command_name, revision, at_start)]
            if remaining != planned[len(planned) - len(remaining):]:
                raise PlanChanged(f"{result['warnings'][-1]}; what is left to do is not the "
                                  "rest of the plan, so nothing more was run")
            planned = remaining
        result["planned"] = planned
        print(f"[dashboard] alembic {command_name} {revision}: "
              f"{len(planned)} step(s) from {', '.join(before) or 'base'}", flush=True)
        VERSION_APPLY_HOOKS.append(on_apply)

        def fn(heads, context):
            # Alembic pulls the steps one at a time, each just before it runs
            # it: what was pulled last is the migration in progress.
            compensate(context, request.get("compensate"))  # only for command "compensate"
            for step in plan_steps(script, command_name, revision, heads):
                started.append(step_id(step))
                started_at.append(time.monotonic())
                # in the job's log at once: if the process dies now, the
                # dashboard can still name the revision that was running
                print(f"[dashboard] {command_name} {started[-1]} started", flush=True)
                yield step

        # What alembic.command.upgrade/downgrade/stamp do, with the script
        # directory already loaded above (loading 300 files twice costs ~0.1 s).
        destination = tuple(revision.split(",")) if command_name == "stamp" else revision
        at_attempt = at_start if at_start is not None else before
        with guarded, _journalled(journal):
            guarded.drop_invalid(request.get("drop_invalid_indexes") or [])
            in_env = True
            while True:
                done = len(applied_steps)
                try:
                    with EnvironmentContext(config, script, destination_rev=destination,
                                            fn=fn):
                        script.run_env()
                    break
                except Exception as exc:
                    if not guarded.retry_whole(exc):
                        raise
                    now = current_heads(url, version_table)
                    _forget_rolled_back(applied_steps, heads_after, done, at_attempt, now)
                    started[:] = [s["revision"] for s in applied_steps]
                    at_attempt = now
        result["ok"] = True
    except BaseException as exc:
        failure = exc
        frames = traceback.format_exception(type(exc), exc, exc.__traceback__)
        traceback.print_exc()
        result["ok"] = False
        result["error"] = {"type": type(exc).__name__, "message": str(exc),
                           "traceback": "".join(frames).splitlines()[-12:]}
        if len(started) > len(applied_steps):
            result["failed_revision"] = started[-1]
        elif not started and in_env:
            result["failed_phase"] = "env"
    finally:
        guarded.report(result, failure)
        result["applied"] = [s["revision"] for s in applied_steps]
        try:
            result["current_after"] = current_heads(url, version_table)
        except Exception as exc:  # database gone: say so, keep the rest
            result["current_after_error"] = str(exc)
        _snapshot_into(result, "schema_after", request, url, version_table)
        lock.release()
    print(f"[dashboard] database now at: {', '.join(result.get('current_after') or []) or 'base'}",
          flush=True)
    return result
