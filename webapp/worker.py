"""The job process: ``python webapp/worker.py JOB_ID FOLDER``.

Started by :func:`webapp.services.jobs.launch_worker` in its own session, so
it survives the web request, the browser closing and gunicorn restarting its
workers. It first starts the migration prepared in FOLDER (standard library
only, before the app is imported, so the two start-ups overlap), then
creates the app from the same environment variables as the web app and
follows the migration to its end.

Run by path, not with ``-m``: ``-m webapp.worker`` would import the whole
package (Flask, SQLAlchemy) before the migration could start.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _spawn(folder: Path) -> subprocess.Popen:
    # Same as webapp.core.runner.spawn_prepared_run, without importing webapp.
    with open(folder / "launch.json", encoding="utf-8") as f:
        launch = json.load(f)

    def die_with_parent() -> None:
        try:
            import ctypes
            import signal

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
        except (OSError, AttributeError):
            pass

    return subprocess.Popen(launch["argv"], cwd=launch["cwd"],
                            env={**os.environ, **launch["env"]}, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=die_with_parent)


def main(argv: list[str]) -> int:
    """Run job ``argv[1]`` prepared in folder ``argv[2]``; exit 0 whatever the outcome."""
    if len(argv) != 3 or not argv[1].isdigit():
        print("usage: python webapp/worker.py JOB_ID FOLDER", file=sys.stderr)
        return 2
    started = time.time()
    folder = Path(argv[2])
    proc = _spawn(folder)
    # The migration has the CPU first; following it (importing Flask and
    # SQLAlchemy, flushing the log) can wait. Matters on small machines.
    os.nice(5)
    try:
        sys.path.insert(0, str(PROJECT_ROOT))
        from webapp import create_app
        from webapp.services import jobs
        from webapp.services.catalog import get_catalog

        app = create_app()
        with app.app_context():
            jobs.execute(int(argv[1]), get_catalog(), proc=proc, folder=folder,
                         started=started)
    except BaseException:
        proc.kill()  # never leave a migration running that nobody follows
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
