"""WSGI entry point: ``gunicorn wsgi:app`` (see gunicorn.conf.py).

An unusable configuration (e.g. an invalid targets file) stops the start with
one line on stderr, not a traceback.
"""

import sys

from webapp import STARTUP_ERRORS, create_app, startup_message

try:
    app = create_app()
except STARTUP_ERRORS as exc:
    sys.exit(startup_message(exc))
