"""``flask --app wsgi ...`` commands that administer accounts: set-password,
set-role, disable-user, enable-user, revoke-token, list-users. Each is
audited as done by ``cli`` (the operator at the host's shell)."""

from __future__ import annotations

import sys

import click
from flask import Flask

from .services import accounts, audit

CLI_ACTOR = audit.Actor("cli", "local")


def _user(name: str):
    user = accounts.get_user(name)
    if user is None:
        raise click.ClickException(f"no user called {name!r}")
    return user


def read_password(from_stdin: bool) -> str:
    """A new password: one line of stdin (``--password-stdin``, without its
    line ending), or typed twice at a hidden prompt."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


def register(app: Flask) -> None:
    """Add the account commands to ``app.cli``."""

    @app.cli.command("set-password")
    @click.argument("name")
    @click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
    def set_password(name: str, password_stdin: bool) -> None:
        """Reset the password of NAME (ends all of NAME's sessions)."""
        user = _user(name)
        try:
            accounts.set_password(user, read_password(password_stdin))
        except accounts.AccountError as exc:
            raise click.ClickException(str(exc)) from None
        audit.record(CLI_ACTOR, "account.password", "ok", user=name)
        click.echo(f"password of {name} changed; its sessions ended")

    @app.cli.command("set-role")
    @click.argument("name")
    @click.argument("role", type=click.Choice(list(accounts.ROLES)))
    def set_role(name: str, role: str) -> None:
        """Give NAME the role ROLE (ends all of NAME's sessions)."""
        user = _user(name)
        try:
            accounts.set_role(user, role)
        except accounts.AccountError as exc:
            raise click.ClickException(str(exc)) from None
        audit.record(CLI_ACTOR, "account.role", "ok", user=name, role=role)
        click.echo(f"{name} is now {role}")

    @app.cli.command("disable-user")
    @click.argument("name")
    def disable_user(name: str) -> None:
        """Disable NAME: no login, sessions ended, tokens refused."""
        user = _user(name)
        try:
            accounts.set_active(user, False)
        except accounts.AccountError as exc:
            raise click.ClickException(str(exc)) from None
        audit.record(CLI_ACTOR, "account.disable", "ok", user=name)
        click.echo(f"{name} is disabled")

    @app.cli.command("enable-user")
    @click.argument("name")
    def enable_user(name: str) -> None:
        """Enable NAME again (its tokens work again unless revoked)."""
        accounts.set_active(_user(name), True)
        audit.record(CLI_ACTOR, "account.enable", "ok", user=name)
        click.echo(f"{name} is enabled")

    @app.cli.command("revoke-token")
    @click.argument("token_id", type=int)
    def revoke_token(token_id: int) -> None:
        """Revoke API token TOKEN_ID (see list-users)."""
        row = accounts.revoke_token(token_id)
        if row is None:
            raise click.ClickException(f"no token with id {token_id}")
        audit.record(CLI_ACTOR, "token.revoke", "ok", user=row.user.username, token=token_id)
        click.echo(f"token {token_id} ({row.prefix}…, {row.name}) of {row.user.username} "
                   "is revoked")

    @app.cli.command("list-users")
    def list_users() -> None:
        """Accounts with role and state, and their tokens (id, prefix, last use)."""
        for user in accounts.list_users():
            state = "active" if user.is_active else "disabled"
            click.echo(f"{user.username}\t{user.role}\t{state}")
            for t in user.tokens:
                used = t.last_used_at.isoformat(timespec="seconds") if t.last_used_at \
                    else "never"
                revoked = f"revoked {t.revoked_at:%Y-%m-%d}" if t.revoked_at else "valid"
                click.echo(f"  token {t.id}\t{t.prefix}…\t{t.name}\tlast used {used}\t{revoked}")
