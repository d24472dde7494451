"""``python webapp/agent REQUEST.json RESULT.json`` — run by a target's interpreter.

Python puts this directory first on ``sys.path``. It holds only this file
and the uniquely named package :mod:`alembic_dashboard_agent`, so a target
project's own top-level modules (``status``, ``config``, ``plan`` ...) are
never shadowed by the dashboard's.
"""

import sys

from alembic_dashboard_agent import main

if __name__ == "__main__":
    sys.exit(main(sys.argv))
