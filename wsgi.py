"""WSGI entry point: ``gunicorn wsgi:app`` (see gunicorn.conf.py).

An unusable configuration (e.g. an invalid targets file) stops the start with
one line on stderr, not a traceback.
"""

import sys

from webapp import create_app, startup_problem

if (problem := startup_problem()) is not None:
    sys.exit(problem)

app = create_app()
