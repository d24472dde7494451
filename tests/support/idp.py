"""The tests' OpenID Connect provider: ``tests/oidc/provider.mjs`` (the
certified ``oidc-provider`` npm package) under the machine's Node.js.

:func:`install` runs ``npm ci`` from the committed ``package-lock.json`` into
``~/.cache/alembic-dashboard-tests/oidc-<hash of the lock>`` once; later runs
reuse it. Without node/npm the tests skip, except under ``CI=true``.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from support.common import IN_CI, free_port

SOURCE = Path(__file__).resolve().parents[1] / "oidc"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") \
    / "alembic-dashboard-tests"
USERS = {"alice": "alice-password", "bob": "bob-password", "carol": "carol-password",
         "dave": "dave-password"}  # as in provider.mjs


def _missing(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} is required in CI for the single sign-on tests")
    pytest.skip(f"{what} unavailable: single sign-on tests skipped")


def install() -> Path:
    """The folder holding ``node_modules`` for the provider (installed once).

    :raises pytest.fail.Exception: (CI) / skips (elsewhere) without node or npm.
    """
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        _missing("node and npm")
    lock = (SOURCE / "package-lock.json").read_bytes()
    folder = CACHE / f"oidc-{hashlib.sha256(lock).hexdigest()[:16]}"
    if not (folder / ".installed").exists():
        staging = CACHE / f"tmp-{secrets.token_hex(4)}"
        staging.mkdir(parents=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy(SOURCE / name, staging / name)
        result = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
                                cwd=staging, capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            message = f"npm ci failed: {result.stderr[-2000:]}"
            pytest.fail(message) if IN_CI else pytest.skip(message)
        (staging / ".installed").touch()
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    shutil.copy(SOURCE / "provider.mjs", folder / "provider.mjs")  # ESM resolves beside it
    return folder


@dataclass
class Idp:
    """A running provider: ``issuer`` URL, the dashboard's client credentials."""

    issuer: str
    client_id: str
    client_secret: str
    process: subprocess.Popen = field(repr=False)

    def config(self, **extra) -> dict:
        """Flask config for a dashboard using this provider (groups → roles)."""
        return {"OIDC_ISSUER": self.issuer, "OIDC_CLIENT_ID": self.client_id,
                "OIDC_CLIENT_SECRET": self.client_secret,
                "OIDC_SCOPES": "openid profile email groups", "OIDC_ROLES_CLAIM": "groups",
                "OIDC_ROLE_MAP": {"dba": "approver", "devs": "operator", "ops": "admin"},
                "OIDC_DEFAULT_ROLE": "none", "OIDC_NAME": "Test IdP", "LOCAL_LOGIN": True,
                **extra}

    def environment(self) -> dict:
        """The same as environment variables (for gunicorn)."""
        return {"DASHBOARD_OIDC_ISSUER": self.issuer, "DASHBOARD_OIDC_CLIENT_ID": self.client_id,
                "DASHBOARD_OIDC_CLIENT_SECRET": self.client_secret,
                "DASHBOARD_OIDC_SCOPES": "openid profile email groups",
                "DASHBOARD_OIDC_ROLES_CLAIM": "groups", "DASHBOARD_OIDC_NAME": "Test IdP",
                "DASHBOARD_OIDC_ROLE_MAP": "dba=approver,devs=operator,ops=admin"}

    def tamper_next_token(self, mode: str) -> None:
        """Make the provider's next token response carry a bad ID token (see provider.mjs)."""
        request = urllib.request.Request(self.issuer + "/__test__/tamper", method="POST",
                                         data=json.dumps({"mode": mode}).encode())
        with urllib.request.urlopen(request, timeout=5) as response:
            assert json.load(response)["mode"] == mode

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start(redirect_uris: list[str], log_path: Path, *, claims_at_userinfo: bool = False) -> Idp:
    """Start the provider on a free 127.0.0.1 port for ``redirect_uris``
    (``claims_at_userinfo``: the ID token carries only ``sub``; the other
    claims come from the userinfo endpoint).

    :raises RuntimeError: it exited or did not listen within 20 s (its log).
    """
    folder = install()
    port = free_port()
    client_id, secret = "alembic-dashboard", secrets.token_urlsafe(24)
    env = {**os.environ, "IDP_PORT": str(port), "IDP_CLIENT_ID": client_id,
           "IDP_CLIENT_SECRET": secret, "IDP_REDIRECT_URIS": ",".join(redirect_uris),
           "IDP_CLAIMS_AT_USERINFO": "1" if claims_at_userinfo else "0"}
    log = open(log_path, "w")
    process = subprocess.Popen([shutil.which("node") or "node", "provider.mjs"], cwd=folder,
                               env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    issuer = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(log_path.read_text())
        try:
            with urllib.request.urlopen(issuer + "/.well-known/openid-configuration",
                                        timeout=1):
                return Idp(issuer, client_id, secret, process)
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the OpenID Connect provider did not start: " + log_path.read_text())
