"""A target virtualenv for tests of "real projects".

A real target keeps its code in its own virtualenv, not in the dashboard's:
``shop_project`` (plain Alembic) needs the ``shopkit`` package and
``shopapp_project`` (Flask-Migrate) needs the ``shopapp`` package, and neither
is installed in the dashboard's environment.

``target_venv()`` builds that virtualenv once per machine, under
``~/.cache/alembic-dashboard-tests/venv-<key>/``, where the key hashes the
pinned requirements, the interpreter and every file of the two fixture
packages: a fresh clone reuses it and an edit to a fixture package builds a new
one. ``copy_project()`` (or ``shop_project()`` / ``shopapp_project()``) copies
a fixture project into a test's temporary folder, since tests change them.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
"""Where the fixture packages and projects live."""

PACKAGES = ("shopkit", "shopapp")
"""Fixture packages installed (non-editable) into the target venv."""

REQUIREMENTS = (
    "alembic==1.20.1",
    "SQLAlchemy==2.1.9",
    "Flask==3.1.3",
    "Flask-SQLAlchemy==3.1.1",
    "Flask-Migrate==4.1.0",
    "PyMySQL==1.2.4",
    # transitive, pinned like requirements.txt for repeatable builds
    "Werkzeug==3.1.9",
    "Jinja2==3.1.6",
    "MarkupSafe==3.0.4",
    "itsdangerous==2.2.0",
    "click==8.5.1",
    "blinker==1.9.0",
    "Mako==1.4.3",
    "typing_extensions==4.16.0",
)
"""Pinned requirements of the target venv (besides the fixture packages)."""

CACHE_ROOT = Path.home() / ".cache" / "alembic-dashboard-tests"
"""Folder holding the built venvs, shared by every clone on this machine."""

MARKER = ".alembic-dashboard-complete"
"""File written into a venv once it is fully built and checked."""

_SKIP_NAMES = {"__pycache__", "build", "dist", ".pytest_cache"}
_SKIP_SUFFIXES = (".pyc", ".pyo", ".egg-info")
_COPY_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.db", "ruff.toml")
_PIP_TIMEOUT = 900


def _base_python() -> Path:
    """The interpreter that creates venvs: the one running the tests, outside any venv."""
    return Path(getattr(sys, "_base_executable", None) or sys.executable)


def _package_files(name: str) -> list[Path]:
    """The source files of fixture package ``name``, sorted, without build litter."""
    root = FIXTURES / name
    files = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if any(part in _SKIP_NAMES or part.endswith(_SKIP_SUFFIXES) for part in rel.parts):
            continue
        if path.is_file():
            files.append(path)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def venv_key() -> str:
    """The cache key of the target venv: 16 hex digits of a SHA-256.

    It covers the pinned requirement lines, the interpreter's version and the
    names and contents of every file of the fixture packages.
    """
    digest = hashlib.sha256()
    for line in REQUIREMENTS:
        digest.update(f"req {line}\n".encode())
    digest.update(f"python {sys.version_info[:3]} {_base_python()}\n".encode())
    for name in PACKAGES:
        root = FIXTURES / name
        for path in _package_files(name):
            data = path.read_bytes()
            rel = f"{name}/{path.relative_to(root).as_posix()}"
            digest.update(f"file {rel} {len(data)}\n".encode())
            digest.update(data)
    return digest.hexdigest()[:16]


def _run(cmd: list[str], what: str, cwd: Path | None = None) -> str:
    """Run ``cmd``; raise RuntimeError with the tail of its output if it fails."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.pop("VIRTUAL_ENV", None)
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    try:
        proc = subprocess.run(
            cmd,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=_PIP_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.output or ""
        if isinstance(out, bytes):
            out = out.decode(errors="replace")
        raise RuntimeError(f"{what} timed out after {_PIP_TIMEOUT}s:\n{_tail(out)}")
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{_tail(proc.stdout)}")
    return proc.stdout


def _tail(text: str, lines: int = 40) -> str:
    """The last ``lines`` lines of ``text``."""
    return "\n".join(text.splitlines()[-lines:])


def _relocate(venv: Path, old: Path, new: Path) -> None:
    """Rewrite ``old`` to ``new`` in the venv's scripts and pyvenv.cfg.

    pip writes the venv's absolute path into the shebangs of console scripts
    (``bin/alembic``, ``bin/flask``...) and the activate scripts; the venv is
    built under a temporary name and renamed, so those must name the final path.
    """
    old_b, new_b = os.fsencode(old), os.fsencode(new)
    for path in [*(venv / "bin").iterdir(), venv / "pyvenv.cfg"]:
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        if old_b in data:
            path.write_bytes(data.replace(old_b, new_b))


def _build(final: Path) -> None:
    """Build the venv into a temporary sibling of ``final``, check it, rename it."""
    tmp = Path(tempfile.mkdtemp(prefix=f"{final.name}.tmp-", dir=final.parent))
    try:
        with tempfile.TemporaryDirectory(prefix="targetenv-src-") as src:
            # pip builds local projects in place (build/, *.egg-info):
            # install from a copy so the fixtures stay clean.
            sources = []
            for name in PACKAGES:
                dest = Path(src) / name
                shutil.copytree(FIXTURES / name, dest, ignore=_COPY_IGNORE)
                sources.append(str(dest))
            _run(
                [str(_base_python()), "-m", "venv", "--prompt", final.name, str(tmp)],
                "python3 -m venv",
            )
            python = tmp / "bin" / "python"
            _run(
                [str(python), "-m", "pip", "install", *REQUIREMENTS, *sources],
                "pip install",
                cwd=Path(src),
            )
        _run(
            [str(python), "-c", "import alembic, flask_migrate, pymysql, shopapp, shopkit"],
            "import check",
            cwd=tmp,
        )
        _relocate(tmp, tmp, final)
        tmp.chmod(0o755)  # mkdtemp made it private
        (tmp / MARKER).write_text(f"{venv_key()}\n{' '.join(REQUIREMENTS)}\n")
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    try:  # the console scripts' shebangs must name the renamed venv
        _run([str(final / "bin" / "alembic"), "--version"], "alembic --version")
    except RuntimeError:
        shutil.rmtree(final, ignore_errors=True)
        raise


def _is_complete(venv: Path) -> bool:
    """Whether ``venv`` was fully built and its interpreter still resolves."""
    return (venv / MARKER).is_file() and (venv / "bin" / "python").exists()


@functools.cache
def target_venv() -> Path:
    """The python of the target venv, building the venv first if needed.

    The venv lives at ``~/.cache/alembic-dashboard-tests/venv-<venv_key()>/``
    and holds ``REQUIREMENTS`` plus the ``shopkit`` and ``shopapp`` fixture
    packages. Concurrent callers (several pytest processes, several clones)
    serialise on a file lock; the venv is built under a temporary name and
    renamed into place, so a half-built venv is never used. Raises
    RuntimeError, with the tail of pip's output, if the build fails.
    """
    final = CACHE_ROOT / f"venv-{venv_key()}"
    if _is_complete(final):
        return final / "bin" / "python"
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    with open(CACHE_ROOT / f"{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _is_complete(final):
            # Leftovers of a killed build, or a venv whose interpreter is gone.
            for stale in CACHE_ROOT.glob(f"{final.name}.tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
            if final.exists():
                shutil.rmtree(final)
            _build(final)
    return final / "bin" / "python"


def target_bin(name: str) -> Path:
    """A console script of the target venv, e.g. ``target_bin("alembic")``."""
    return target_venv().parent / name


def copy_project(name: str, dest: Path) -> Path:
    """Copy fixture project ``name`` into folder ``dest``; return the copy's path.

    Tests change their projects (database URL, new revisions), so they work on
    a copy, never on ``tests/fixtures`` itself.
    """
    target = Path(dest) / name
    shutil.copytree(FIXTURES / name, target, ignore=_COPY_IGNORE)
    return target


def set_sqlalchemy_url(ini: Path, url: str) -> None:
    """Write ``url`` as ``sqlalchemy.url`` in the alembic.ini at ``ini``."""
    text = Path(ini).read_text()
    line = "sqlalchemy.url = " + url.replace("%", "%%")
    new, count = re.subn(r"(?m)^sqlalchemy\.url\s*=.*$", lambda _: line, text)
    if count != 1:
        raise ValueError(f"{ini} has {count} sqlalchemy.url lines, expected 1")
    Path(ini).write_text(new)


def shop_project(dest: Path, url: str | None = None) -> Path:
    """Copy the plain Alembic ``shop_project`` into ``dest``; return its folder.

    Its ``alembic.ini`` is at ``<folder>/alembic.ini``; with ``url`` given, it
    is written there as ``sqlalchemy.url``. Run it with the target venv's
    ``alembic`` (``target_bin("alembic")``): its env.py imports ``shopkit``.
    """
    project = copy_project("shop_project", dest)
    if url is not None:
        set_sqlalchemy_url(project / "alembic.ini", url)
    return project


def shopapp_project(dest: Path) -> Path:
    """Copy the Flask-Migrate ``shopapp_project`` into ``dest``; return its folder.

    Run ``flask --app shopapp:create_app db ...`` (``target_bin("flask")``)
    with the copy as working directory and the database URL in the
    ``SHOPAPP_DATABASE_URL`` environment variable.
    """
    return copy_project("shopapp_project", dest)
