"""Notification mails through SMTP (standard library ``smtplib`` / ``email``).

Configured by ``DASHBOARD_SMTP_*`` (``SMTP_HOST`` ... in the app's config,
see :func:`webapp.config._smtp`); with no ``SMTP_HOST`` nothing is sent.
Like the webhooks (:mod:`webapp.services.notify`), a mail is handed to a
background thread and :func:`send` returns at once: a slow or dead mail
server never delays or fails a web request. Mails leave one after another,
in the order this process queued them. A mail that cannot be delivered is
written to the audit log (``email`` / ``failed``, with the number of
recipients and the error, scrubbed of every known secret); the SMTP
password is never logged, audited or shown.
"""

from __future__ import annotations

import os
import smtplib
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass
from email.message import EmailMessage

from flask import Flask, current_app

from ..core.redaction import scrub_secrets

TIMEOUT = 10.0  # seconds for the SMTP connection and each command


@dataclass(frozen=True)
class Mail:
    """One plain-text mail: ``to`` (addresses), ``subject``, ``body``;
    ``target`` and ``event`` say what it is about (for the audit of a failure)."""

    to: tuple[str, ...]
    subject: str
    body: str
    target: str | None = None
    event: str | None = None


_lock = threading.Lock()
_waiting: deque[tuple[Flask, Mail]] = deque()
_thread: threading.Thread | None = None
_pid = os.getpid()  # a forked child starts with no sender (it was the parent's)


def configured(app: Flask) -> bool:
    """True when notification mails are on (``DASHBOARD_SMTP_HOST`` is set)."""
    return bool(app.config.get("SMTP_HOST"))


def send(mail: Mail) -> None:
    """Queue ``mail`` for the sender thread and return at once; nothing
    happens when mail is not configured or ``mail.to`` is empty."""
    global _thread, _pid
    app = current_app._get_current_object()
    if not configured(app) or not mail.to:
        return
    with _lock:
        if _pid != os.getpid():
            _pid, _thread = os.getpid(), None
            _waiting.clear()
        _waiting.append((app, mail))
        if _thread is not None and _thread.is_alive():
            return
        _thread = threading.Thread(target=_drain, daemon=True, name="mail-sender")
        thread = _thread
    thread.start()


def _drain() -> None:
    """Deliver the waiting mails in order; end when none is left."""
    global _thread
    while True:
        with _lock:
            if not _waiting:
                _thread = None
                return
            app, mail = _waiting.popleft()
        try:
            _deliver(app, mail)
        except Exception as exc:  # noqa: BLE001 - e.g. the audit write failed: go on
            print(f"mail delivery failed: {type(exc).__name__}", flush=True)


def message(app: Flask, mail: Mail, to: str) -> EmailMessage:
    """``mail`` as the :class:`~email.message.EmailMessage` sent to ``to``
    (one message per recipient, so no one sees the others' addresses)."""
    msg = EmailMessage()
    msg["From"] = app.config["SMTP_FROM"]
    msg["To"] = to
    msg["Subject"] = mail.subject
    msg.set_content(mail.body)
    return msg


def _deliver(app: Flask, mail: Mail) -> None:
    config = app.config
    try:
        with smtplib.SMTP(config["SMTP_HOST"], config["SMTP_PORT"], timeout=TIMEOUT) as smtp:
            if config["SMTP_STARTTLS"]:
                smtp.starttls(context=ssl.create_default_context())
            if config.get("SMTP_USERNAME"):
                smtp.login(config["SMTP_USERNAME"], config["SMTP_PASSWORD"])
            for to in mail.to:
                smtp.send_message(message(app, mail, to))
        return
    except (OSError, smtplib.SMTPException) as exc:
        error = scrub_secrets(f"{type(exc).__name__}: {exc}", None,
                              [config.get("SMTP_PASSWORD")])
    from . import audit

    with app.app_context():
        audit.record(audit.SYSTEM, "email", "failed", target=mail.target, event=mail.event,
                     recipients=len(mail.to), server=f"{config['SMTP_HOST']}:"
                     f"{config['SMTP_PORT']}", error=error[:500])


def wait_all(timeout: float = 30.0) -> None:
    """Wait (at most ``timeout`` seconds) until the queued mails are sent or
    given up on."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with _lock:
            thread = _thread
        if thread is None:
            return
        thread.join(max(0.0, min(0.5, deadline - time.monotonic())))
