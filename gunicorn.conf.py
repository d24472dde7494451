"""gunicorn settings for `make run` and deployments (override with GUNICORN_CMD_ARGS)."""

import os

bind = os.environ.get("BIND", f"127.0.0.1:{os.environ.get('PORT', '8000')}")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = 120
graceful_timeout = 30
accesslog = "-"
errorlog = "-"
# Trust X-Forwarded-* only from the reverse proxy on this host.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
# gunicorn 27's control socket (gunicornc) defaults to one fixed path in the
# home folder, shared by every gunicorn on the host: off unless
# GUNICORN_CONTROL_SOCKET names this instance's own path (mode 0600).
_control_socket = os.environ.get("GUNICORN_CONTROL_SOCKET", "").strip()
control_socket_disable = not _control_socket
if _control_socket:
    control_socket = _control_socket
    control_socket_mode = 0o600


def on_starting(server):
    """Check the settings and targets file once, in the master, before any
    worker starts: a problem is one line on stderr and exit status 1 (workers
    failing to import wsgi.py would otherwise be restarted again and again)."""
    import sys

    from webapp import startup_problem

    problem = startup_problem()
    if problem is not None:
        print(problem, file=sys.stderr)
        sys.exit(1)
