"""Account administration (admin role): users, roles, tokens, per-target
grants; invite a person or create a service account, reset a password,
create a token (with an expiry and a role ceiling), disable, enable, change
role, revoke a token, end sessions. Every change is a POST with CSRF,
confirmed in the browser (``hx-confirm``) and audited; a refusal of the new
account and token forms is a :class:`Refused` answered by this blueprint's
one handler (a 4xx page; nothing changes).

An invitation or reset link and a new token are shown once, in the answer
to the POST that made them (never in a flash message: those live in the
session cookie)."""

from __future__ import annotations

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user

from ..auth_setup import require_role
from ..extensions import db
from ..models import ROLES, User, utcnow
from ..services import accounts, audit, password_links
from ..services.catalog import get_catalog
from ..services.refusals import Reason, Refused
from .common import actor, answer_refusal, audits_refusals, raw_input, url_details
from .schemas import AccountBody, EmailBody, TokenBody

bp = Blueprint("admin", __name__, url_prefix="/admin")


def _user_or_404(user_id: int) -> User:
    """The account ``user_id``. :raises NotFound: 404 for an unknown id."""
    user = db.session.get(User, user_id)
    if user is None:
        abort(404, description="no such user")
    return user


@bp.errorhandler(Refused)
def refused(exc: Refused):
    """Every refusal of this blueprint: audited once, then the error page."""
    return answer_refusal(exc)


@bp.route("/users")
@require_role("admin")
def users():
    """Every account with role, state, last login, tokens (expiry, ceiling,
    last use, revoked) and its per-target grants from the targets file."""
    targets = list(get_catalog().targets.values())
    everyone = accounts.list_users()
    return render_template("admin/users.html", users=everyone, roles=ROLES,
                           ceilings=accounts.CEILINGS,
                           grants={u.id: accounts.grants_of(u, targets) for u in everyone},
                           default_days=accounts.DEFAULT_TOKEN_DAYS,
                           max_days=accounts.MAX_TOKEN_DAYS,
                           link_hours=password_links.LINK_HOURS, now=utcnow())


def _check_local_login() -> None:
    """:raises Refused: (403) passwords are switched off (``DASHBOARD_LOCAL_LOGIN=off``)."""
    if not current_app.config.get("LOCAL_LOGIN", True):
        raise Refused(Reason.POLICY, "Passwords are switched off here: people sign in "
                                     "through single sign-on, so there is nothing to "
                                     "invite or reset.")


def _shown_once(what: str, user: User, secret: str, note: str):
    """The page that shows a new link or token once (never stored in clear)."""
    return render_template("admin/shown_once.html", what=what, user=user, secret=secret,
                           note=note)


def _sent_username(exc: Refused) -> dict:
    return {"user": str(raw_input().get("username", ""))[:64]}


@bp.route("/users", methods=["POST"])
@require_role("admin")
@audits_refusals("account.create", _sent_username)
def create_user():
    """Create an account (``username``, ``role``, ``kind``, optional
    ``email`` for notification mails): a person gets an invitation link to
    choose a password; a service account none (it uses API tokens)."""
    body = AccountBody.load(AccountBody.from_form(request.form))
    if body.kind == "service":
        user = accounts.create_user(body.username, body.role, None, is_service=True,
                                    email=body.email)
        audit.record(actor(), "account.create", "ok", user=user.username, role=user.role,
                     kind="service", **({"email": user.email} if user.email else {}))
        flash(f"Service account {user.username} created: give it an API token.", "info")
        return redirect(url_for("admin.users", _anchor=f"user-{user.username}"), code=303)
    _check_local_login()
    user, token = password_links.invite(body.username, body.role, body.email)
    audit.record(actor(), "account.create", "ok", user=user.username, role=user.role,
                 kind="person", **({"email": user.email} if user.email else {}))
    return _shown_once("invitation link", user,
                       url_for("auth.password_link", token=token, _external=True),
                       f"Send it to {user.username}: it works once, for "
                       f"{password_links.LINK_HOURS} hours.")


@bp.route("/users/<int:user_id>/password-link", methods=["POST"])
@require_role("admin")
@audits_refusals("account.reset", url_details(user_id="user_id"))
def reset_password(user_id: int):
    """End the account's password and sessions now and show a link to
    choose a new one (also an invitation sent again)."""
    user = _user_or_404(user_id)
    _check_local_login()
    token = password_links.reset(user)
    audit.record(actor(), "account.reset", "ok", user=user.username)
    return _shown_once("password link", user,
                       url_for("auth.password_link", token=token, _external=True),
                       f"{user.username}'s password and sessions have ended. Send the "
                       f"link to {user.username}: it works once, for "
                       f"{password_links.LINK_HOURS} hours.")


@bp.route("/users/<int:user_id>/email", methods=["POST"])
@require_role("admin")
@audits_refusals("account.email", url_details(user_id="user_id"))
def set_email(user_id: int):
    """Set or clear (empty ``email``) the address the account's notification
    mails go to."""
    user = _user_or_404(user_id)
    body = EmailBody.load(EmailBody.from_form(request.form))
    accounts.set_email(user, body.email)
    audit.record(actor(), "account.email", "ok", user=user.username, email=user.email)
    flash(f"{user.username}: " + (f"mails go to {user.email}." if user.email
                                  else "no email address, no mails."), "info")
    return redirect(url_for("admin.users", _anchor=f"user-{user.username}"), code=303)


@bp.route("/users/<int:user_id>/tokens", methods=["POST"])
@require_role("admin")
@audits_refusals("token.create", url_details(user_id="user_id"))
def create_token(user_id: int):
    """Create an API token for the account (``name``, ``expires_days``,
    ``role_ceiling``) and show it once."""
    user = _user_or_404(user_id)
    body = TokenBody.load(TokenBody.from_form(request.form))
    days = accounts.DEFAULT_TOKEN_DAYS if body.expires_days is None else body.expires_days
    row, token = accounts.issue_token(user, body.name, expires_days=days,
                                      ceiling=body.role_ceiling)
    audit.record(actor(), "token.create", "ok", user=user.username, token=row.id,
                 name=row.name, expires_at=row.expires_at.isoformat(timespec="seconds"),
                 role_ceiling=row.role_ceiling)
    ceiling = f", at most {row.role_ceiling}" if row.role_ceiling else ""
    return _shown_once("API token", user, token,
                       f"Token {row.name!r} of {user.username}{ceiling}, valid until "
                       f"{row.expires_at:%Y-%m-%d %H:%M} UTC. Send it as "
                       "Authorization: Bearer <token>.")


@bp.route("/users/<int:user_id>/<any(disable, enable, role, logout):change>",
          methods=["POST"])
@require_role("admin")
def change_user(user_id: int, change: str):
    """Disable / enable an account, change its role or end its sessions."""
    user = _user_or_404(user_id)
    try:
        if change == "disable":
            accounts.set_active(user, False)
        elif change == "enable":
            accounts.set_active(user, True)
        elif change == "role":
            accounts.set_role(user, request.form.get("role", "")[:16])
        else:
            accounts.end_sessions(user)
    except accounts.AccountError as exc:
        audit.record(actor(), f"account.{change}", "denied", user=user.username,
                     reason=str(exc))
        flash(str(exc), "error")
        return redirect(url_for("admin.users"), code=303)
    audit.record(actor(), f"account.{change}", "ok", user=user.username,
                 **({"role": user.role} if change == "role" else {}))
    flash(f"{user.username}: {change} done.", "info")
    if user.id == current_user.id and change != "enable":  # own session just ended
        if request.headers.get("HX-Request") == "true":
            return "", 204, {"HX-Redirect": url_for("auth.login")}
        return redirect(url_for("auth.login"), code=303)
    return redirect(url_for("admin.users"), code=303)


@bp.route("/tokens/<int:token_id>/revoke", methods=["POST"])
@require_role("admin")
def revoke_token(token_id: int):
    """Revoke an API token: it stops working at once."""
    row = accounts.revoke_token(token_id)
    if row is None:
        abort(404, description="no such token")
    audit.record(actor(), "token.revoke", "ok", user=row.user.username, token=token_id)
    flash(f"Token {row.prefix}… ({row.name}) of {row.user.username} revoked.", "info")
    return redirect(url_for("admin.users"), code=303)
