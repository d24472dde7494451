"""Web helpers shared by every blueprint (pages and API).

* :func:`actor`: who is acting, for the audit log;
* :func:`http_status`: the one mapping of a :class:`Refused` reason to an
  HTTP status;
* refusals: a view declares with :func:`audits_refusals` under which audit
  action (and with which details) its refusals are recorded, and optionally
  how it answers them; each blueprint's one ``errorhandler(Refused)`` calls
  :func:`answer_refusal` (pages) or :func:`refusal_json` (API), which audit
  the denial once and answer;
* :func:`raw_input` and :func:`job_request_details`: what a refused request
  sent, for the audit row and the refusal page;
* :func:`get_target_or_404`, :func:`hidden_from_user`: targets (and their
  jobs and requests) the user may not see answer as if they did not exist;
* :func:`job_request` and :func:`job_refusal_page`: the job request of a
  form or query string, and the page that refuses one;
* :func:`safe_next`: where to go after signing in (password or SSO).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from flask import abort, current_app, jsonify, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from werkzeug.http import HTTP_STATUS_CODES

from ..core.targets import Target
from ..services import accounts, audit, jobs
from ..services.catalog import get_catalog
from ..services.refusals import Reason, Refused
from .errors import respond
from .schemas import REVISION_MAX, JobBody

HTTP_STATUS: dict[Reason, int] = {
    Reason.ROLE: 403, Reason.POLICY: 403, Reason.SELF_APPROVAL: 403,
    Reason.BAD_INPUT: 400, Reason.PLAN_ERROR: 400,
    Reason.NOT_FOUND: 404, Reason.UNKNOWN_REVISION: 404,
    Reason.BUSY: 409, Reason.PLAN_CHANGED: 409, Reason.NOTHING_TO_DO: 409,
    Reason.NOT_OPEN: 409, Reason.ALREADY_DECIDED: 409, Reason.SCRIPT_DIRECTORY: 409,
    Reason.NOT_REVIEWED: 409, Reason.PLAN_UNCHANGED: 409,
    Reason.DATABASE_MISSING: 409, Reason.NOT_PROMOTED: 409, Reason.LINT_BLOCKED: 409,
    Reason.PLAN_FAILED: 422, Reason.UNSUPPORTED: 422,
    Reason.UNREACHABLE: 503,
}


def http_status(refused: Refused) -> int:
    """The HTTP status that answers ``refused`` (every reason has one)."""
    return HTTP_STATUS[refused.reason]


def actor() -> audit.Actor:
    """The logged-in user (with its identity provider subject) and client
    address of the current request, for the audit log."""
    return audit.Actor.of(current_user, request.remote_addr)


Details = Callable[[Refused], Mapping[str, Any]]
Answer = Callable[[Refused], ResponseReturnValue]


@dataclass(frozen=True)
class RefusalPolicy:
    """How a view's refusals are audited (``action`` and the ``details``
    of the row) and, when ``answer`` is set, answered instead of the
    blueprint's default."""

    action: str
    details: Details = field(default=lambda exc: {})
    answer: Answer | None = None


def audits_refusals(action: str, details: Details | None = None,
                    answer: Answer | None = None) -> Callable:
    """Decorator (below ``@bp.route``): a :class:`Refused` raised by the view
    is recorded as a denied ``action`` (``{part}`` replaced by that part of
    the URL, e.g. ``"rollout.{action}"``) with ``details(refused)`` (plus its
    reason and message) and answered by ``answer(refused)``, or by the
    blueprint's default answer when ``answer`` is None."""
    policy = RefusalPolicy(action, details or (lambda exc: {}), answer)

    def decorate(view: Callable) -> Callable:
        view.refusal_policy = policy  # type: ignore[attr-defined]
        return view

    return decorate


def refusal_policy() -> RefusalPolicy | None:
    """The :class:`RefusalPolicy` of the current request's view, or None."""
    view = current_app.view_functions.get(request.endpoint or "")
    return getattr(view, "refusal_policy", None)


def record_refusal(refused: Refused, **extra: Any) -> None:
    """Audit ``refused`` under the current view's action (nothing for a view
    that declares none): reason, message, the view's details, ``extra``."""
    policy = refusal_policy()
    if policy is None:
        return
    action = policy.action.format(**(request.view_args or {}))
    audit.record(actor(), action, "denied", reason=refused.reason,
                 message=str(refused), **policy.details(refused), **extra)


def error_page(refused: Refused) -> ResponseReturnValue:
    """The dashboard's error page for ``refused``, with its status (as
    ``abort(status, description=message)`` would render it)."""
    code = http_status(refused)
    return respond(code, HTTP_STATUS_CODES[code], str(refused))


def answer_refusal(refused: Refused, default: Answer = error_page) -> ResponseReturnValue:
    """A page blueprint's handler of :class:`Refused`: audit it once, then
    answer with the view's own answer or ``default``."""
    record_refusal(refused)
    policy = refusal_policy()
    answer = policy.answer if policy is not None and policy.answer is not None else default
    return answer(refused)


def refusal_json(refused: Refused) -> ResponseReturnValue:
    """The API's handler of :class:`Refused`: audit it once (``via="api"``),
    answer ``{"error": reason, "detail": message}`` (plus ``"job"``, the
    running job, when busy) with its status."""
    record_refusal(refused, via="api")
    body: dict[str, Any] = {"error": refused.reason, "detail": str(refused)}
    if refused.job_id is not None:
        body["job"] = refused.job_id
    return jsonify(body), http_status(refused)


def url_details(**keys: str) -> Details:
    """Audit details taken from the URL: ``url_details(rollout="rollout_id")``
    records ``{"rollout": <the URL's rollout_id>}`` (text cut to 64 characters)."""
    def details(refused: Refused) -> dict[str, Any]:
        values = request.view_args or {}
        return {key: values[part][:64] if isinstance(values[part], str) else values[part]
                for key, part in keys.items()}

    return details


def raw_input() -> Mapping[str, Any]:
    """What the current request sent: the JSON object, else the form (POST)
    or the query string (GET); an empty mapping for any other JSON."""
    if request.is_json:
        payload = request.get_json(silent=True)
        return payload if isinstance(payload, dict) else {}
    return request.args if request.method == "GET" else request.form


def job_request_details(refused: Refused) -> dict[str, Any]:
    """Audit details of a refused job request: the target (from the URL),
    command and revision as sent (cut short) and the running job, if busy."""
    sent = raw_input()
    return {"target": str((request.view_args or {}).get("name", ""))[:64],
            "command": str(sent.get("command", ""))[:32],
            "revision": str(sent.get("revision", ""))[:64], "running_job": refused.job_id}


_UNSAFE_NEXT_RE = re.compile(r"[\x00-\x1f\x7f\\]")


def safe_next(target: str | None) -> str:
    """Where to go after login: ``target`` when it is a same-site relative
    path without control characters or backslashes, else the index page."""
    if not target or _UNSAFE_NEXT_RE.search(target):
        return url_for("main.index")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("main.index")
    return target


def awaiting_me() -> list:
    """The requests waiting for the logged-in user's decision
    (:func:`webapp.services.inbox.awaiting`), computed once per request: the
    navigation's count, the dashboard's strip and a card share it."""
    from flask import g

    from ..services import inbox

    if "awaiting_me" not in g:
        g.awaiting_me = inbox.awaiting(get_catalog(), current_user) \
            if current_user.is_authenticated else []
    return g.awaiting_me


def get_target_or_404(name: str) -> Target:
    """The configured target ``name``, if the logged-in user may see it.

    :raises NotFound: (404) no such target, or one the user has no role on
        (:func:`webapp.services.accounts.hidden_from`; audited): the same
        answer for both, so the answer never tells which names exist.
    """
    target = get_catalog().get(name)
    if target is not None and not hidden_from_user(target):
        return target
    abort(404, description=f"There is no target called {name[:80]!r}.")


def hidden_from_user(target: Target | None) -> bool:
    """True (audited as a denial) when the logged-in user has no role on
    ``target``: a page about it (a job, a request) then answers exactly like
    one that does not exist, so neither the target's name nor the row leaks."""
    return accounts.hidden_from(current_user, target, actor(), path=request.path[:200])


def job_request(name: str, source) -> tuple[jobs.JobRequest, JobBody]:
    """The job request of a form or query string (``command``, ``revision``,
    ``plan_hash``, ``reason``: :class:`~webapp.views.schemas.JobBody`) on
    the target ``name``.

    :raises NotFound: (404) no such target, or one the user may not see.
    :raises Refused: bad input (400).
    """
    target = get_target_or_404(name)
    body = JobBody.load(JobBody.from_form(source))
    return body.job_request(target), body


def job_refusal_page(exc: Refused):
    """The refusal page of a job request: why, the running job when busy,
    and a way forward (e.g. the new plan) for the command and revision sent."""
    sent = raw_input()
    name = (request.view_args or {}).get("name", "")
    running = jobs.get_job(exc.job_id) if exc.job_id else None
    code = http_status(exc)
    return render_template("jobs/refused.html", target=get_catalog().get(name), error=exc,
                           running=running,
                           command=str(sent.get("command", ""))[:REVISION_MAX],
                           revision=str(sent.get("revision", ""))[:REVISION_MAX],
                           code=code), code
