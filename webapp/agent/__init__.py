"""The target-side agent: the code that runs inside a target's own process.

Run as a directory (``python webapp/agent REQUEST.json RESULT.json``) by the
target's interpreter; see :mod:`alembic_dashboard_agent` for the protocol.
The dashboard imports this package only for its standard-library parts
(:mod:`.alembic_dashboard_agent.launch`, :mod:`.alembic_dashboard_agent.locks`).
"""

from pathlib import Path

AGENT_DIR = Path(__file__).resolve().parent  # what the target's python runs
