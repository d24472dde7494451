"""A target's changelog, its drift diff (models vs database) and its schema
compared with another target's. Every page is a read (GET, nothing written)."""

from __future__ import annotations

from flask import Blueprint, abort, render_template, request
from flask_login import current_user

from ..core.history import HistoryError
from ..services import accounts, changelog, schema_compare
from ..services.catalog import get_catalog
from ..services.refusals import Refused
from .common import answer_refusal, get_target_or_404

bp = Blueprint("changes", __name__, url_prefix="/targets/<name>")

PAGE = 50  # changelog entries per page


@bp.errorhandler(Refused)
def refused(exc: Refused):
    """Every refusal of this blueprint: audited once, then the error page."""
    return answer_refusal(exc)


@bp.route("/changelog")
def show(name: str):
    """Every revision applied, reverted or stamped here, newest first, with
    the schema diff of its job; ``?before=<entry id>`` pages on."""
    target = get_target_or_404(name)
    raw = request.args.get("before", "")
    if raw and not raw.isdigit():
        abort(400, description="before must be an entry number")
    entries = changelog.entries(target.name, limit=PAGE, before_id=int(raw) if raw else None)
    try:
        history = get_catalog().history(target)
    except HistoryError:  # the page still lists what ran
        history = None
    return render_template("changes/changelog.html", target=target,
                           groups=changelog.group_by_job(entries), history=history,
                           older=entries[-1].id if len(entries) == PAGE else None,
                           paged=bool(raw))


@bp.route("/drift/differences")
def drift(name: str):
    """Models vs database: what autogenerate would change (also when the
    database is not at head)."""
    target = get_target_or_404(name)
    try:
        found, error = schema_compare.drift(get_catalog(), target), None
    except schema_compare.CompareFailed as exc:
        found, error = None, str(exc)
    return render_template("changes/drift.html", target=target, found=found, error=error)


@bp.route("/schema-diff")
def schema_diff(name: str):
    """This target's live schema against another's (``?against=<name>``): a
    form to choose the other target, then the differences."""
    target = get_target_or_404(name)
    catalog = get_catalog()
    others = [t for t in accounts.visible_targets(current_user, catalog.targets.values())
              if t.name != target.name]
    against_name = request.args.get("against", "")
    against, found, error = None, None, None
    if against_name:
        against = get_target_or_404(against_name)
        try:
            found = schema_compare.schema_diff(catalog, target, against)
        except schema_compare.CompareFailed as exc:
            error = str(exc)
    return render_template("changes/schema_diff.html", target=target, others=others,
                           against=against, found=found, error=error)
