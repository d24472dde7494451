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
