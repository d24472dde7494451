"""The job page's live output (issue 11 item 2), through the Flask app:
a queued job says it waits for the job process, "Finished" appears only
once a job has finished, each poll answers only the output after its offset,
and the poll of an ended job answers 286 (htmx stops polling)."""

from __future__ import annotations

from webapp.extensions import db
from webapp.models import Job, JobStatus, utcnow

HX = {"HX-Request": "true"}


def _alive() -> dict:
    """A running job whose process is this test's (so it is not reaped)."""
    import os
    import socket

    from webapp.services.liveness import process_start_token

    return {"worker_pid": os.getpid(), "worker_host": socket.gethostname()[:255],
            "worker_start": process_start_token(os.getpid())}


def _job(app, **values) -> int:
    with app.app_context():
        job = Job(target="demo-staging", command="upgrade", revision="heads", plan_hash="x",
                  **values)
        db.session.add(job)
        db.session.commit()
        return job.id


def _update(app, job_id: int, **values) -> None:
    with app.app_context():
        db.session.execute(db.update(Job).where(Job.id == job_id).values(**values))
        db.session.commit()


def test_queued_then_running_output_is_sent_once_then_polling_stops(demo_app, logged_in):
    job_id = _job(demo_app, status=JobStatus.QUEUED)
    page = logged_in.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert "queued, waiting for the job process" in page
    assert f"/jobs/{job_id}/status?offset=0" in page and "Finished" not in page

    first = "INFO  Running upgrade a -> b\n"
    _update(demo_app, job_id, status=JobStatus.RUNNING, started_at=utcnow(), log=first,
            **_alive())
    poll = logged_in.get(f"/jobs/{job_id}/status?offset=0", headers=HX)
    html = poll.get_data(as_text=True)
    assert poll.status_code == 200 and "HX-Request" in poll.headers["Vary"]
    assert 'hx-swap-oob="beforeend"' in html and "Running upgrade a -&gt; b" in html
    assert f"offset={len(first)}" in html and "Finished" not in html

    second = "copying rows...\n"
    _update(demo_app, job_id, log=first + second)
    html = logged_in.get(f"/jobs/{job_id}/status?offset={len(first)}",
                         headers=HX).get_data(as_text=True)
    assert "copying rows..." in html and "Running upgrade" not in html  # only the new part

    html = logged_in.get(f"/jobs/{job_id}/status?offset={len(first + second)}",
                         headers=HX).get_data(as_text=True)
    assert 'id="job-log"' not in html  # nothing new: nothing appended

    _update(demo_app, job_id, status=JobStatus.SUCCEEDED, finished_at=utcnow(),
            log=first + second + "done\n")
    poll = logged_in.get(f"/jobs/{job_id}/status?offset={len(first + second)}", headers=HX)
    html = poll.get_data(as_text=True)
    assert poll.status_code == 286
    assert "done" in html and "Finished" in html and "hx-trigger" not in html


def test_a_shorter_log_than_the_offset_is_sent_whole(demo_app, logged_in):
    job_id = _job(demo_app, status=JobStatus.RUNNING, log="short\n", **_alive())
    html = logged_in.get(f"/jobs/{job_id}/status?offset=999", headers=HX).get_data(as_text=True)
    assert 'hx-swap-oob="innerHTML"' in html and "short" in html


def test_each_poll_gets_only_the_new_characters_on_every_dialect(make_app, any_db_url):
    """Each poll is sent only the part after its offset, which counts
    characters, with output that is not ASCII (accents, arrows, an emoji),
    stored in a SQLite, MariaDB or PostgreSQL dashboard database."""
    from support.common import add_user, login

    app = make_app(SQLALCHEMY_DATABASE_URI=any_db_url)
    add_user(app, "olga", "viewer")
    client = app.test_client()
    login(client, "olga")
    first = "Schéma → étape 1 ✓ 🚀\n"
    second = "données copiées: 1 000 lignes ✓\n"
    job_id = _job(app, status=JobStatus.RUNNING, started_at=utcnow(), log=first + second,
                  **_alive())
    html = client.get(f"/jobs/{job_id}/status?offset={len(first)}",
                      headers=HX).get_data(as_text=True)
    assert 'hx-swap-oob="beforeend"' in html
    assert "données copiées: 1 000 lignes ✓" in html and "Schéma" not in html
    assert f"offset={len(first + second)}" in html and "live output" in html
    html = client.get(f"/jobs/{job_id}/status?offset={len(first + second)}",
                      headers=HX).get_data(as_text=True)
    assert 'id="job-log"' not in html  # nothing new
    html = client.get(f"/jobs/{job_id}/status?offset={len(first + second) + 1}",
                      headers=HX).get_data(as_text=True)
    assert 'hx-swap-oob="innerHTML"' in html and "Schéma → étape 1 ✓ 🚀" in html
    empty = _job(app, status=JobStatus.RUNNING, started_at=utcnow(), **_alive())
    html = client.get(f"/jobs/{empty}/status?offset=0", headers=HX).get_data(as_text=True)
    assert "waiting for the first output" in html and 'id="job-log"' not in html
