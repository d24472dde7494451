"""Webhook notifications: request created / approved / rejected / expired,
job finished.

A JSON POST to the target's ``webhook_url`` (targets file) or the global
``DASHBOARD_WEBHOOK_URL``, Slack-compatible (``text``) plus structured
fields (``event``, ``target``, ...). Sent from a background thread with a
timeout and retries, so a slow or dead receiver never delays a web request;
a final failure is written to the audit log. Events to one URL are
delivered one after another, in the order this process sent them (one
sender thread per URL while it has events waiting), so a receiver never
sees "approved" before "created".
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from urllib.parse import urlsplit

import urllib3
from flask import Flask, current_app

TIMEOUT = 3.0  # seconds per attempt
RETRIES = 3  # attempts in all
BACKOFF = 0.5  # seconds, doubled after each failed attempt

# urllib3's Retry does the retrying (connection errors and 5xx/429 answers,
# with exponential backoff); a POST is retried because receivers dedupe on
# the event fields and a lost notification is worse than a repeated one.
_HTTP = urllib3.PoolManager(retries=urllib3.Retry(
    total=RETRIES - 1, backoff_factor=BACKOFF, allowed_methods=None,
    status_forcelist=(429, 500, 502, 503, 504), raise_on_status=False,
    respect_retry_after_header=False))

_threads: list[threading.Thread] = []
_threads_lock = threading.Lock()
# url -> events waiting for that URL's sender thread (present while it runs)
_waiting: dict[str, deque] = {}
_pid = os.getpid()  # a forked child starts with no sender (they are the parent's)


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
        _enqueue(app, url, payload)


def _enqueue(app: Flask, url: str, payload: dict) -> None:
    """Queue ``payload`` for ``url``; start its sender unless one runs."""
    global _pid
    with _threads_lock:
        if _pid != os.getpid():
            _pid, _threads[:] = os.getpid(), []
            _waiting.clear()
        if url in _waiting:  # its sender takes this one after the earlier ones
            _waiting[url].append((app, payload))
            return
        _waiting[url] = deque([(app, payload)])
        thread = threading.Thread(target=_drain, args=(url,), daemon=True,
                                  name=f"webhook-{payload['event']}")
        _threads[:] = [t for t in _threads if t.is_alive()]
        _threads.append(thread)
    thread.start()


def _drain(url: str) -> None:
    """Deliver ``url``'s waiting events in order; end when none is left."""
    while True:
        with _threads_lock:
            waiting = _waiting.get(url)
            if not waiting:
                _waiting.pop(url, None)
                return
            app, payload = waiting.popleft()
        try:
            _deliver(app, url, payload)
        except Exception as exc:  # noqa: BLE001 - e.g. the audit write failed: go on with the next
            print(f"webhook delivery failed: {type(exc).__name__}: {exc}", flush=True)


def _deliver(app: Flask, url: str, payload: dict) -> None:
    body = json.dumps(payload, default=str).encode()
    try:
        response = _HTTP.request("POST", url, body=body, timeout=TIMEOUT, headers={
            "Content-Type": "application/json", "User-Agent": "alembic-dashboard"})
        if 200 <= response.status < 300:
            return
        error = f"HTTP {response.status}"
    except urllib3.exceptions.MaxRetryError as exc:
        error = str(exc.reason or exc)
    except urllib3.exceptions.HTTPError as exc:
        error = str(exc)
    from . import audit

    with app.app_context():
        audit.record(audit.SYSTEM, "webhook", "failed", target=payload.get("target"),
                     event=payload.get("event"), url=_safe(url), attempts=RETRIES,
                     error=_safe_error(error, url))


def _safe_error(error: str, url: str) -> str:
    """``error`` with the webhook URL's query string (tokens) removed."""
    query = urlsplit(url).query
    return error.replace(query, "…") if query else error


def _safe(url: str) -> str:
    """The URL without any query string or credentials (tokens live there)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}" \
           f"{parts.path}"


def wait_all(timeout: float = 30.0) -> None:
    """Wait for pending deliveries (the job process calls this before it
    exits): each URL's sender ends once its events are delivered."""
    deadline = time.monotonic() + timeout
    with _threads_lock:
        threads = list(_threads)
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))


def in_flight() -> int:
    """How many webhook deliveries of this process are still under way (a
    delivery retries with backoff: it lasts at least ``BACKOFF * 3`` seconds
    when every attempt fails)."""
    with _threads_lock:
        return sum(thread.is_alive() for thread in _threads)
