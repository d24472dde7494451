"""Accounts in the browser, as an admin and a new person do it: the admin
invites a person on /admin/users and sees the link once, the person opens
it in their own browser, chooses a password and logs in; the admin gives
them a token with a role ceiling, and on a phone the page still reads.
Screenshots go to ``test-artifacts/``."""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect
from support.browser import log_in

pytestmark = pytest.mark.browser

NEW_PASSWORD = "tangerine lamp oboe"


def test_admin_invites_a_person_who_sets_a_password_and_logs_in(new_page, artifacts):
    name = f"dana-{secrets.token_hex(3)}"  # the live server is shared by the session
    admin = new_page()
    admin.goto("/login")
    log_in(admin)
    admin.goto("/admin/users")
    form = admin.locator("form.new-account")
    form.locator("input[name=username]").fill(name)
    form.locator("select[name=role]").select_option("operator")
    form.get_by_role("button", name="Create").click()
    admin.wait_for_load_state()
    expect(admin.locator(".shown-once h1")).to_have_text(f"New invitation link for {name}")
    link = admin.locator("#secret").input_value()
    admin.screenshot(path=str(artifacts / "accounts-invitation-link.png"), full_page=True)

    person = new_page()
    person.goto(urlsplit(link).path)
    expect(person.locator("#link-user")).to_have_text(name)
    person.fill("#password", NEW_PASSWORD)
    person.fill("#confirm", NEW_PASSWORD)
    person.get_by_role("button", name="Set password").click()
    person.wait_for_load_state()
    assert urlsplit(person.url).path == "/login"
    expect(person.locator(".flash")).to_have_text("Your password is set: log in with it.")
    log_in(person, name, NEW_PASSWORD)
    assert urlsplit(person.url).path == "/"

    admin.goto("/admin/users")  # the link page answered the POST at this same URL
    row = admin.locator(f"#user-{name}")
    row.locator("details.new-token summary").click()
    row.locator("input[name=name]").fill("read-only pipeline")
    row.locator("input[name=expires_days]").fill("7")
    row.locator("select[name=role_ceiling]").select_option("viewer")
    row.get_by_role("button", name="Create token").click()
    admin.wait_for_load_state()
    assert admin.locator("#secret").input_value().startswith("adb_")
    admin.goto("/admin/users")
    expect(admin.locator(f"#user-{name} .tokens")).to_contain_text("at most viewer")
    admin.screenshot(path=str(artifacts / "accounts-users.png"), full_page=True)

    phone = new_page(storage_state=admin.context.storage_state())
    phone.set_viewport_size({"width": 390, "height": 844})
    phone.goto("/admin/users")
    expect(phone.locator(f"#user-{name}")).to_contain_text("only the global role")
    overflow = phone.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    phone.screenshot(path=str(artifacts / "accounts-users-phone.png"), full_page=True)
    assert overflow <= 0, f"the users page is {overflow}px wider than a phone"
