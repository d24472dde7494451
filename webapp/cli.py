"""``flask --app wsgi ...`` commands: init, create-user, set-groups, create-token,
db-upgrade, housekeeping."""

from __future__ import annotations

import secrets
from pathlib import Path

import click
from alembic import command
from alembic.config import Config
from flask import Flask, current_app
from flask.cli import with_appcontext

from .cli_accounts import read_password
from .security import secure_instance_folder
from .services import accounts

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def upgrade_dashboard_db(url: str, revision: str = "head") -> None:
    """Apply the dashboard's own migrations (``migrations/``) to ``url``.

    :raises alembic.util.CommandError: the migration failed.
    """
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.attributes["url"] = url
    config.attributes["configure_logger"] = False
    command.upgrade(config, revision)


def _ids(ids: list[int]) -> str:
    return ", ".join(map(str, ids)) or "none"


@click.command("db-upgrade")
@with_appcontext
def db_upgrade() -> None:
    """Apply the dashboard's own schema migrations (alembic upgrade head)."""
    upgrade_dashboard_db(current_app.config["SQLALCHEMY_DATABASE_URI"])
    click.echo("dashboard database is at head")

@click.command("housekeeping")
@with_appcontext
def housekeeping_command() -> None:
    """Mark jobs whose process is gone abandoned, expire requests whose
    time is up, record ended rollout steps (for cron or a systemd timer)."""
    from .services.housekeeping import run_housekeeping

    done = run_housekeeping()
    click.echo(f"abandoned jobs: {_ids(done['abandoned'])}; expired requests: "
               f"{_ids(done['expired'])}; rollouts looked at: {_ids(done['rollouts'])}")

@click.command("init")
@with_appcontext
def init() -> None:
    """Prepare everything `make run` needs: schema, demo databases, first admin."""
    import os

    from .core.demo import prepare_demo_databases
    from .core.runner import configure_agent_forkservers
    from .services.catalog import get_catalog

    configure_agent_forkservers(0)  # a command ends soon: a warm agent would be wasted
    password = os.environ.get("DASHBOARD_ADMIN_PASSWORD") or ""
    if password:
        try:
            accounts.check_password_policy(password, "admin")
        except accounts.AccountError as exc:
            raise click.ClickException(f"DASHBOARD_ADMIN_PASSWORD is refused: {exc}") \
                from None
    upgrade_dashboard_db(current_app.config["SQLALCHEMY_DATABASE_URI"])
    catalog = get_catalog()
    if catalog.is_demo:
        for line in prepare_demo_databases(catalog.targets):
            click.echo(f"demo: {line}")
    if accounts.user_count() == 0:
        printed = not password
        password = password or secrets.token_urlsafe(12)
        accounts.create_user("admin", "admin", password)
        if printed:
            click.echo("=" * 60)
            click.echo("First admin created. This password is shown only once:")
            click.echo("  username: admin")
            click.echo(f"  password: {password}")
            click.echo("=" * 60)
        else:
            click.echo("First admin 'admin' created with DASHBOARD_ADMIN_PASSWORD.")
    secure_instance_folder(Path(current_app.instance_path),
                           current_app.config["SQLALCHEMY_DATABASE_URI"])

@click.command("create-user")
@click.argument("name")
@click.option("--role", type=click.Choice(["none", "viewer", "operator", "approver",
                                           "admin"]),
              default="viewer", show_default=True,
              help="Global role; 'none' = only what per-target grants give.")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@with_appcontext
def create_user(name: str, role: str, password_stdin: bool) -> None:
    """Create a local account NAME with ROLE."""
    password = read_password(password_stdin)
    try:
        accounts.create_user(name, role, password)
    except accounts.AccountError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"created user {name} with role {role}")

@click.command("set-groups")
@click.argument("name")
@click.argument("groups", default="")
@with_appcontext
def set_groups(name: str, groups: str) -> None:
    """Set the groups of local user NAME (comma-separated GROUPS; empty
    clears them), matched by group:<name> grants in the targets file."""
    user = accounts.get_user(name)
    if user is None:
        raise click.ClickException(f"no user called {name!r}")
    try:
        kept = accounts.set_groups(user, groups.split(","))
    except accounts.AccountError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"groups of {name}: {', '.join(kept) or '(none)'}")

@click.command("create-token")
@click.argument("name")
@click.option("--label", default="cli", show_default=True, help="What the token is for.")
@click.option("--expires-days", type=click.IntRange(1, accounts.MAX_TOKEN_DAYS),
              default=accounts.DEFAULT_TOKEN_DAYS, show_default=True,
              help="The token stops working after this many days.")
@click.option("--role-ceiling", type=click.Choice(list(accounts.CEILINGS)), default=None,
              help="The token never does more than this role allows.")
@with_appcontext
def create_token(name: str, label: str, expires_days: int, role_ceiling: str | None) -> None:
    """Create an API token for user NAME and print it once."""
    user = accounts.get_user(name)
    if user is None:
        raise click.ClickException(f"no user called {name!r}")
    try:
        token = accounts.create_token(user, label, expires_days=expires_days,
                                      ceiling=role_ceiling)
    except accounts.AccountError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(token)


COMMANDS = (db_upgrade, housekeeping_command, init, create_user, set_groups, create_token)


def init_app(app: Flask) -> None:
    """Register the commands on ``app`` (each runs inside the app's context)."""
    from .cli_accounts import register

    register(app)
    for cmd in COMMANDS:
        app.cli.add_command(cmd)
