"""Account administration (admin role): users, roles, tokens; disable,
enable, change role, revoke a token, end sessions. Every change is a POST
with CSRF, confirmed in the browser (``hx-confirm``) and audited."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user

from ..auth_setup import require_role
from ..extensions import db
from ..models import ROLES, User
from ..services import accounts, audit
from .common import actor

bp = Blueprint("admin", __name__, url_prefix="/admin")


def _user_or_404(user_id: int) -> User:
    """The account ``user_id``. :raises NotFound: 404 for an unknown id."""
    user = db.session.get(User, user_id)
    if user is None:
        abort(404, description="no such user")
    return user


@bp.route("/users")
@require_role("admin")
def users():
    """Every account with role, state, last login and tokens (last use, revoked)."""
    return render_template("admin/users.html", users=accounts.list_users(), roles=ROLES)


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
