"""The target's Alembic configuration, as Alembic's own commands would build it."""

from __future__ import annotations

import io
import os
import sys

_APP = None
VERSION_APPLY_HOOKS: list = []  # callables(step_info, heads) told of every applied step


def load_flask_app(spec: str):
    """Import ``module:attr``; call it when it is an app factory. The app
    context stays pushed for the life of this process (``flask db`` does the same)."""
    global _APP
    if _APP is None:
        import importlib

        module_name, _, attr = spec.partition(":")
        obj = getattr(importlib.import_module(module_name), attr or "app")
        from flask import Flask

        app = obj if isinstance(obj, Flask) else obj()
        app.app_context().push()
        _APP = app
    return _APP


def alembic_config(request: dict, buffer: io.StringIO):
    """The Alembic Config of the target: from its alembic.ini, or — for a
    Flask-Migrate app — the one Flask-Migrate builds (like ``flask db``).
    Offline SQL goes to ``buffer``; everything else Alembic prints to stdout."""
    from alembic.config import Config

    if request.get("flask_app"):
        app = load_flask_app(request["flask_app"])
        config = app.extensions["migrate"].migrate.get_config(request.get("directory"))
        config.output_buffer = buffer
        config.stdout = sys.stdout
        return config
    config = Config(request["alembic_ini"], ini_section=request.get("ini_section", "alembic"),
                    output_buffer=buffer, stdout=sys.stdout)
    if request.get("url"):
        # configparser interpolation: a literal % must be doubled
        config.set_main_option("sqlalchemy.url", request["url"].replace("%", "%%"))
    return config


def patch_configure(version_table: str | None) -> None:
    """Make an unmodified env.py use the targets file's version table, and
    report each applied step to :data:`VERSION_APPLY_HOOKS` (chained with
    env.py's own ``on_version_apply``)."""
    from alembic.runtime.environment import EnvironmentContext

    original = EnvironmentContext.configure

    def configure(self, *args, **kwargs):
        if version_table:
            kwargs.setdefault("version_table", version_table)
        theirs = kwargs.get("on_version_apply")

        def on_version_apply(ctx, step, heads, run_args):
            for hook in VERSION_APPLY_HOOKS:
                hook(step, heads)
            if theirs is not None:
                theirs(ctx=ctx, step=step, heads=heads, run_args=run_args)

        kwargs["on_version_apply"] = on_version_apply
        return original(self, *args, **kwargs)

    EnvironmentContext.configure = configure


def database_url(request: dict) -> dict:
    """Op ``database_url``: the URL a Flask-Migrate app uses (its own config decides it)."""
    app = load_flask_app(request["flask_app"])
    eng = app.extensions["migrate"].db.engine
    return {"url": eng.url.render_as_string(hide_password=False)}


def script_directory(request: dict) -> dict:
    """Op ``script_directory``: where the script directory and version
    locations are, resolved by Alembic in the target's own Python — this is
    what makes ``script_location = package:path`` (package resources) work.

    :return: ``{"script_location": path, "version_locations": [paths],
        "recursive": bool}``, absolute paths.
    """
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config(request, io.StringIO()))
    return {"script_location": os.path.abspath(script.dir),
            "version_locations": [os.path.abspath(p) for p in script._version_locations],
            "recursive": bool(script.recursive_version_locations)}


def identifiers(request: dict) -> dict:
    """Op ``identifiers`` (``paths``): run revision files whose identifiers are
    not literals; return ``{path: {"revision", "down_revision", "branch_labels",
    "depends_on", "doc"}}``."""
    from alembic.script import ScriptDirectory
    from alembic.util import load_python_file

    ScriptDirectory.from_config(alembic_config(request, io.StringIO()))  # prepend_sys_path
    found = {}
    for path in request["paths"]:
        module = load_python_file(os.path.dirname(path), os.path.basename(path))
        found[path] = {name: getattr(module, name, None) for name in
                       ("revision", "down_revision", "branch_labels", "depends_on")}
        found[path]["doc"] = module.__doc__ or ""
    return {"identifiers": found}
