"""Start a prepared run (standard library only: the job process uses this
before it imports anything heavy, and the dashboard uses it too)."""

from __future__ import annotations

import json
import os
import subprocess


def die_with_parent() -> None:
    """In the child: get SIGKILL when the parent (the job's process) dies
    (Linux ``PR_SET_PDEATHSIG``); elsewhere a no-op."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: the reaper still finds the job's process gone


def spawn_prepared_run(folder) -> subprocess.Popen:
    """Start the run prepared in ``folder`` (its ``launch.json``: argv, cwd, env).

    The child holds the target's database lock for the whole run and dies
    with its parent, so killing the job's process never leaves a migration
    running unattended. Its output (stdout and stderr merged) is readable
    line by line from ``proc.stdout``; the JSON result lands in
    ``folder/result.json``.
    """
    with open(os.path.join(folder, "launch.json"), encoding="utf-8") as f:
        launch = json.load(f)
    return subprocess.Popen(launch["argv"], cwd=launch["cwd"],
                            env={**os.environ, **launch["env"]}, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=die_with_parent)
