"""The job process: ``python -m webapp.worker JOB_ID``.

Started by :func:`webapp.services.jobs.launch_worker` in its own session, so
it survives the web request, the browser closing and gunicorn restarting
its workers. It reads its configuration from the same environment variables
as the web app.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    """Run the job named in ``argv[1]``; exit status 0 whatever the job's outcome."""
    if len(argv) != 2 or not argv[1].isdigit():
        print("usage: python -m webapp.worker JOB_ID", file=sys.stderr)
        return 2
    from webapp import create_app
    from webapp.services import jobs
    from webapp.services.catalog import get_catalog

    app = create_app()
    with app.app_context():
        jobs.execute(int(argv[1]), get_catalog())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
