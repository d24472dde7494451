"""Webhook notifications: request created / approved / rejected / expired,
job finished.

A JSON POST to the target's ``webhook_url`` (targets file) or the global
``DASHBOARD_WEBHOOK_URL``, Slack-compatible (``text``) plus structured
fields (``event``, ``target``, ...). Sent from a background thread with a
timeout and retries, so a slow or dead receiver never delays a web request;
a final failure is written to the audit log.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

from flask import Flask, current_app

TIMEOUT = 3.0  # seconds per attempt
RETRIES = 3
BACKOFF = 0.5  # seconds, doubled after each failed attempt

_threads: list[threading.Thread] = []
_threads_lock = threading.Lock()


def webhook_urls(app: Flask, target_name: str | None) -> list[str]:
    """The URLs to notify for an event on ``target_name`` (target's, then global)."""
    urls = []
    catalog = app.extensions.get("alembic_dashboard")
    target = catalog.get(target_name) if catalog and target_name else None
    if target is not None and target.webhook_url:
        urls.append(target.webhook_url)
    global_url = app.config.get("WEBHOOK_URL")
    if global_url and global_url not in urls:
        urls.append(global_url)
    return urls


def send(event: str, target: str | None, **fields) -> None:
    """Queue ``event`` for every configured webhook; returns at once.

    :param fields: JSON-serialisable facts; ``text`` becomes the Slack line
        (a default is made from the event and target).
    """
    app = current_app._get_current_object()
    urls = webhook_urls(app, target)
    if not urls:
        return
    text = fields.pop("text", None) or f"[alembic-dashboard] {event} on {target}"
    payload = {"text": text, "event": event, "target": target, **fields}
    for url in urls:
        thread = threading.Thread(target=_deliver, args=(app, url, payload), daemon=True,
                                  name=f"webhook-{event}")
        with _threads_lock:
            _threads[:] = [t for t in _threads if t.is_alive()]
            _threads.append(thread)
        thread.start()


def _deliver(app: Flask, url: str, payload: dict) -> None:
    body = json.dumps(payload, default=str).encode()
    delay, error = BACKOFF, "unknown error"
    for attempt in range(1, RETRIES + 1):
        request = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": "alembic-dashboard"})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                if 200 <= response.status < 300:
                    return
                error = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            error = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            error = str(getattr(exc, "reason", exc))
        if attempt < RETRIES:
            time.sleep(delay)
            delay *= 2
    from . import audit

    with app.app_context():
        audit.record(audit.SYSTEM, "webhook", "failed", target=payload.get("target"),
                     event=payload.get("event"), url=_safe(url), attempts=RETRIES, error=error)


def _safe(url: str) -> str:
    """The URL without any query string or credentials (tokens live there)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}" \
           f"{parts.path}"


def wait_all(timeout: float = 30.0) -> None:
    """Wait for pending deliveries (the job process calls this before it exits)."""
    deadline = time.monotonic() + timeout
    with _threads_lock:
        threads = list(_threads)
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
