"""The web layer's shared pieces: one input schema per body (the same limits
and messages for a form and the API), one refusal handler per blueprint
(each denial audited once, under the action of what was refused), and no
blueprint reaching into another one's private names."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from support.common import add_user, csrf_from, login
from support.jobtools import token_headers

from webapp.models import AuditEvent

WEBAPP = Path(__file__).resolve().parents[1] / "webapp"


def _denials(app) -> list[tuple[str, dict]]:
    with app.app_context():
        from webapp.extensions import db

        rows = db.session.execute(db.select(AuditEvent).filter_by(outcome="denied")
                                  .order_by(AuditEvent.id)).scalars().all()
        return [(row.action, json.loads(row.details or "{}")) for row in rows]


def _client(app, username: str, role: str):
    add_user(app, username, role)
    client = app.test_client()
    assert login(client, username).status_code == 302
    return client, csrf_from(client.get("/").get_data(as_text=True))


def test_a_command_has_one_length_limit_for_pages_and_api(demo_app):
    """33 characters: the same refusal and message from the plan page, the
    confirm form and the API (the page used to pass up to 200 on to the
    planner, the API 32)."""
    client, token = _client(demo_app, "olga", "operator")
    command = "u" * 33
    page = client.get("/targets/demo-staging/plan",
                      query_string={"command": command, "revision": "heads"})
    assert page.status_code == 400
    assert "command or revision is too long" in page.get_data(as_text=True)
    form = client.post("/targets/demo-staging/jobs", data={
        "csrf_token": token, "command": command, "revision": "heads", "plan_hash": "x"})
    assert form.status_code == 400
    assert "command or revision is too long" in form.get_data(as_text=True)
    api = demo_app.test_client().post("/api/v1/targets/demo-staging/jobs",
                                      json={"command": command, "revision": "heads"},
                                      headers=token_headers(demo_app, "pipe", "operator"))
    assert (api.status_code, api.json) == (400, {"error": "bad_input",
                                                 "detail": "command or revision is too long"})
    actions = [action for action, _ in _denials(demo_app)]
    assert actions == ["job.request"] * 3


def test_a_refused_rehearsal_is_audited_once(demo_app):
    """A viewer's rehearsal from the page: one ``rehearsal`` denial (it used
    to be recorded a second time as ``job.request``)."""
    client, token = _client(demo_app, "vic", "viewer")
    response = client.post("/targets/demo-staging/rehearsals", data={
        "csrf_token": token, "command": "upgrade", "revision": "heads", "plan_hash": "x"})
    assert response.status_code == 403
    denials = _denials(demo_app)
    assert [action for action, _ in denials] == ["rehearsal"]
    assert denials[0][1]["reason"] == "role" and denials[0][1]["command"] == "upgrade"


def test_a_refused_revision_write_is_audited_as_such(demo_app):
    """A viewer writing a revision: denied ``revision.create`` (it used to be
    recorded as a refused job request), the refusal page with its status."""
    client, token = _client(demo_app, "vic", "viewer")
    response = client.post("/targets/demo-staging/revisions", data={
        "csrf_token": token, "kind": "empty", "message": "add a table"})
    assert response.status_code == 403
    assert "needs the operator role; your role there is viewer" in response.get_data(
        as_text=True)
    denials = _denials(demo_app)
    assert [action for action, _ in denials] == ["revision.create"]
    assert denials[0][1]["kind"] == "empty"


@pytest.mark.parametrize(("body", "message"), [
    ({"command": 1, "revision": "head"}, "command and revision must be strings, as for a job"),
    ({"command": "upgrade", "revision": "head", "tier": ["x" * 201]},
     "tier must be a string or a list of strings"),
    ({"command": "upgrade", "revision": "head", "tier": "staging", "batch_size": True},
     "batch_size must be a whole number"),
    ({"command": "upgrade", "revision": "head", "tier": "staging", "paused": "yes"},
     "reason must be a string; stop_on_failure and paused true or false"),
])
def test_rollout_body_messages(body, message):
    from webapp.services.refusals import Refused
    from webapp.views.schemas import RolloutBody

    with pytest.raises(Refused) as refused:
        RolloutBody.load(body)
    assert str(refused.value) == message and refused.value.reason == "bad_input"


def test_rollout_body_keeps_names_in_order_without_blanks_or_duplicates():
    from webapp.views.schemas import RolloutBody

    body = RolloutBody.load({"command": " upgrade ", "revision": "heads",
                             "targets": ["b ", "a", "", "b"], "batch_size": "3"})
    spec = body.to_spec()
    assert (spec.command, spec.selection.names, spec.batch_size, spec.concurrency) == (
        "upgrade", ("b", "a"), 3, 1)


def _private_imports(path: Path) -> list[str]:
    """``from <module of the dashboard> import _name`` lines of ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith(
                "webapp")):
            found += [f"{path.name}:{node.lineno} {alias.name}" for alias in node.names
                      if alias.name.startswith("_") and alias.name != "__future__"]
    return found


def test_no_web_module_imports_a_private_name():
    """Helpers shared by blueprints live in ``webapp/views/common.py``, not
    behind another blueprint's underscore."""
    web = [*(WEBAPP / "views").glob("*.py"), *(WEBAPP / "api").glob("*.py"),
           WEBAPP / "readiness.py"]
    assert [line for path in web for line in _private_imports(path)] == []


def test_the_route_rules_of_a_submission_are_the_services(demo_app):
    """Which form may submit to which target is decided by ``submission.submit``
    (it was checked in the views): a direct job on the protected target, a
    request on an unprotected one, are refused (policy) before the role."""
    from webapp.services import accounts, audit, jobs, submission
    from webapp.services.catalog import get_catalog
    from webapp.services.refusals import Refused

    add_user(demo_app, "vic", "viewer")
    with demo_app.test_request_context():
        catalog = get_catalog()
        viewer = accounts.get_user("vic")
        for name, asks_for, says in (("demo-production", "job", "is protected"),
                                     ("demo-staging", "request", "is not protected")):
            job_request = jobs.JobRequest(catalog.get(name), "upgrade", "heads")
            with pytest.raises(Refused) as refused:
                submission.submit(catalog, viewer, job_request, audit.Actor.of(viewer, None),
                            asks_for=asks_for)
            assert refused.value.reason == "policy" and says in str(refused.value)
        with pytest.raises(Refused) as refused:  # and without: the role decides
            submission.submit(catalog, viewer, jobs.JobRequest(catalog.get("demo-staging"),
                                                         "upgrade", "heads"),
                        audit.Actor.of(viewer, None))
        assert refused.value.reason == "role"
        assert "needs the operator role; your role there is viewer" in str(refused.value)
