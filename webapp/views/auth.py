"""Log in and out; choose a password through an invitation or reset link."""

from __future__ import annotations

from flask import Blueprint, flash, g, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user, logout_user
from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length

from ..services import accounts, audit, password_links
from ..services.refusals import Reason, Refused
from .common import answer_refusal, audits_refusals, http_status, safe_next
from .schemas import PasswordBody

bp = Blueprint("auth", __name__)


class LoginForm(FlaskForm):
    """``POST /login`` fields: ``username``, ``password``, ``csrf_token``."""

    username = StringField("Username", validators=[DataRequired(), Length(max=64)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])


class EmptyForm(FlaskForm):
    """A form with only the CSRF token, for POST-only buttons (log out)."""


# characters after which a path is not followed: controls (a CR LF would
# end the Location header: werkzeug refuses it, which was a 500 carrying the
# new session cookie) and backslashes (browsers read "/\\host" as "//host")
@bp.route("/login", methods=["GET", "POST"])
def login():
    """Show the login form (and the single sign-on button); on POST check the
    password and start a session. With ``DASHBOARD_LOCAL_LOGIN=off`` a POST
    is refused (403): accounts sign in through the identity provider only."""
    from flask import current_app

    form = LoginForm()
    status = 200
    if request.method == "POST" and not current_app.config.get("LOCAL_LOGIN", True):
        audit.record(audit.Actor((form.username.data or "")[:64] or None, request.remote_addr),
                     "login", "denied", reason="local_login_off")
        flash("Passwords are switched off here: sign in with "
              f"{current_app.config.get('OIDC_NAME')}.", "error")
        return render_template("auth/login.html", form=form), 403
    if form.validate_on_submit():
        try:
            user = accounts.authenticate(form.username.data, form.password.data)
        except accounts.LoginThrottled as exc:
            audit.record(audit.Actor(form.username.data[:64], request.remote_addr), "login",
                         "throttled", retry_after=exc.retry_after)
            flash(f"Too many failed logins for this username. Try again in "
                  f"{exc.retry_after} seconds.", "error")
            return render_template("auth/login.html", form=form), 429
        if user is not None:
            # a new session: nothing (CSRF token included) survives from before
            session.clear()
            g.pop("csrf_token", None)
            login_user(user)
            audit.record(audit.Actor(user.username, request.remote_addr), "login", "ok")
            return redirect(safe_next(request.args.get("next")))
        audit.record(audit.Actor(form.username.data[:64], request.remote_addr), "login",
                     "failed")
        flash("Wrong username or password.", "error")
        status = 401
    elif request.method == "POST":
        status = 400
    return render_template("auth/login.html", form=form), status


@bp.route("/logout", methods=["POST"])
def logout():
    """End the session (POST only, with CSRF), server-side: the user's
    session version is bumped, so a copy of the old cookie no longer works."""
    if current_user.is_authenticated:
        accounts.end_sessions(current_user)
        audit.record(audit.Actor.of(current_user, request.remote_addr), "logout", "ok")
    session.clear()  # nothing (CSRF token, flashes) outlives the session
    logout_user()
    flash("You are logged out.", "info")
    return redirect(url_for("auth.login"))


@bp.errorhandler(Refused)
def refused(exc: Refused):
    """Every refusal of this blueprint: audited once, then the view's answer."""
    return answer_refusal(exc)


# the link's token is in the path: no page of it tells another site where it came from
_LINK_HEADERS = {"Referrer-Policy": "no-referrer"}


def _password_page(exc: Refused):
    """A refused password choice: the form again with the reason (the link
    still works), or the error page when the link itself does not."""
    user = password_links.user_for_link(request.view_args["token"])
    if user is None:
        from .common import error_page

        page, code = error_page(exc)
        return page, code, _LINK_HEADERS
    return render_template("auth/password.html", user=user, error=str(exc),
                           form=EmptyForm()), http_status(exc), _LINK_HEADERS


@bp.route("/password/<token>", methods=["GET", "POST"])
@audits_refusals("account.password_set", answer=_password_page)
def password_link(token: str):
    """An invitation or reset link (:mod:`webapp.services.password_links`):
    GET shows the form to choose a password, POST (``password``,
    ``confirm``, CSRF) sets it, closes the link and goes to the login page.
    A link that does not work is a 404 either way."""
    if request.method == "GET":
        user = password_links.user_for_link(token)
        if user is None:
            raise Refused(Reason.NOT_FOUND, password_links.INVALID_LINK)
        return render_template("auth/password.html", user=user, error=None,
                               form=EmptyForm()), 200, _LINK_HEADERS
    body = PasswordBody.load(PasswordBody.from_form(request.form))
    if body.password != body.confirm:
        raise Refused(Reason.BAD_INPUT, "The two passwords differ.")
    user = password_links.use_link(token, body.password)
    audit.record(audit.Actor(user.username, request.remote_addr), "account.password_set",
                 "ok")
    flash("Your password is set: log in with it.", "info")
    return redirect(url_for("auth.login"), code=303)
