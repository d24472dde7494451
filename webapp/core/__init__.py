"""Alembic domain layer. Flask-free: usable from the web app, the CLI, tests and workers."""
