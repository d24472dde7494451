"""The ends of a job's and a request's life, as signals.

A service that ends a job (its process, the Celery consumer, a cancel) or an
approval request (reject, withdraw, expiry) *sends* an event; whoever must
react (rollouts today) *subscribes*, once, from ``create_app``
(:func:`webapp.services.rollout_advance.subscribe`). This module imports no
subscriber, so the services that end things never depend on the modules
that react to them, even indirectly, and never call "up" into a module that
called them (a rollout step's job is submitted by
:mod:`webapp.services.rollout_advance`, and its end comes back here).

Signals (blinker, in this module's own namespace):

- :data:`job_finished` — sender: the :class:`~webapp.models.Job`, already in
  a final state and committed; keyword ``catalog``
  (:class:`~webapp.services.catalog.Catalog`).
- :data:`request_ended` — sender: the :class:`~webapp.models.ApprovalRequest`,
  rejected, withdrawn or expired and committed; keyword ``catalog``.
- :data:`request_waiting` — sender: the :class:`~webapp.models.ApprovalRequest`,
  committed, now waiting for someone: keyword ``waits_for`` is
  ``"approvers"`` (created, or a new plan submitted: keyword ``new_plan``) or ``"requester"``
  (changes requested; keywords ``by``, the approver's username, and
  ``comment``); keyword ``catalog``. Notification mails subscribe
  (:func:`webapp.services.request_mail.subscribe`).
- :data:`state_read` — sender: None; sent by the read functions (a job, the
  requests, a rollout, a target's recent jobs) before they read: the
  housekeeping fallback (:func:`webapp.services.housekeeping.fallback`, at
  most once per 2 s) subscribes, so a reader never imports what writes.

Receivers run in the sender's process and thread, in its app context; they
must not raise (what ended is already recorded).
"""

from __future__ import annotations

from blinker import Namespace

signals = Namespace()

job_finished = signals.signal("job-finished", doc="A job reached a final state "
                              "(sender: the Job; keyword: catalog).")
request_ended = signals.signal("request-ended", doc="An approval request was rejected, "
                               "withdrawn or expired (sender: the ApprovalRequest; "
                               "keyword: catalog).")
request_waiting = signals.signal("request-waiting", doc="An approval request waits for "
                                 "its approvers (created, new plan) or its requester "
                                 "(changes requested) (sender: the ApprovalRequest; "
                                 "keywords: catalog, waits_for, and by/comment for "
                                 "the requester).")
state_read = signals.signal("state-read", doc="A read of job, request or rollout state "
                            "is about to be answered (sender: None). The throttled "
                            "housekeeping fallback subscribes.")
