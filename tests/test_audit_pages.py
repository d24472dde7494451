"""The audit log in pages (issue 20, item 7): 50 events a page, newest first,
*Older* and *Newest* links that keep the filters, and filters chosen from
the values the log holds (action families, outcomes, users, targets)."""

from __future__ import annotations

import re

from support.common import add_user, login

from webapp.services import audit


def _rows(html: str) -> list[str]:
    """The ``n=`` detail of each row shown, in order."""
    return re.findall(r"<dt>n</dt><dd>(\d+)</dd>", html)


def test_fifty_a_page_with_older_and_newest_links(demo_app):
    add_user(demo_app, "root", "admin")
    with demo_app.app_context():
        for n in range(120):
            audit.record(audit.Actor("bot"), "job.end" if n % 2 else "login",
                         "failed" if n % 3 == 0 else "ok", target="demo-staging", n=n)
    client = demo_app.test_client()
    login(client, "root")
    first = client.get("/audit?user=bot").get_data(as_text=True)
    assert _rows(first) == [str(n) for n in range(119, 69, -1)]  # the newest 50
    assert 'id="audit-newest"' not in first
    older = re.search(r'id="audit-older" href="([^"]+)"', first).group(1).replace("&amp;", "&")
    assert "user=bot" in older  # the filter stays
    second = client.get(older).get_data(as_text=True)
    assert _rows(second) == [str(n) for n in range(69, 19, -1)]
    third = client.get(re.search(r'id="audit-older" href="([^"]+)"', second).group(1)
                       .replace("&amp;", "&")).get_data(as_text=True)
    assert _rows(third) == [str(n) for n in range(19, -1, -1)]
    assert 'id="audit-older"' not in third and 'id="audit-newest"' in third
    # known values to choose from, and the outcome filter
    assert '<option value="job">job.*</option>' in first
    assert '<option value="job.end">job.end</option>' in first
    assert re.search(r'<select name="outcome">.*<option>failed</option>', first, re.S)
    assert '<option value="bot">' in first  # users, as suggestions
    assert re.search(r'<select name="target">.*<option>demo-staging</option>', first, re.S)
    failed = client.get("/audit?user=bot&outcome=failed&action=job").get_data(as_text=True)
    assert _rows(failed) == [str(n) for n in range(119, -1, -1) if n % 3 == 0 and n % 2][:50]
