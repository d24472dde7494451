"""The parsed revision files are kept on disk for every process (issue 22, item 10).

Each check runs the dashboard's catalog in fresh interpreters (what a new
gunicorn worker or a job process is) and counts, in that process, which
revision files ``ast.parse`` was called on: a process that finds the
entries another one wrote parses none of them; a changed file (even one
whose size and modification time were put back) and a corrupt entry are
parsed again, and the entry rewritten.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from support.envtools import Rev, branched, linear, make_env, write_revision, write_targets_file

from webapp.core.history import build_history

ROOT = Path(__file__).resolve().parent.parent

# A fresh process: the dashboard's Catalog from the config (as create_app makes
# it), every ast.parse call recorded by file name, the history printed as JSON.
CHILD = r'''
import ast, json, sys
from pathlib import Path

targets_file, instance = sys.argv[1], Path(sys.argv[2])
parsed = []
real_parse = ast.parse

def recording_parse(source, filename="<unknown>", *args, **kwargs):
    parsed.append(Path(str(filename)).name)
    return real_parse(source, filename, *args, **kwargs)

ast.parse = recording_parse
from webapp.services.catalog import Catalog

catalog = Catalog.from_config({"TARGETS_FILE": targets_file}, instance)
history = catalog.history(catalog.get("t"))
print(json.dumps({
    "parsed": sorted(p for p in parsed if p.endswith(".py")),
    "heads": sorted(history.heads),
    "revisions": {r.revision: [r.message, list(r.down_revisions), list(r.branch_labels),
                               list(r.depends_on), r.create_date, r.has_downgrade,
                               r.path.name]
                  for r in history.revisions},
}))
'''


def run_child(targets_file: Path, instance: Path) -> dict:
    """Load target ``t``'s history in a new interpreter; its JSON report."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(targets_file), str(instance)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def project(tmp_path: Path, revisions: list[Rev]) -> tuple[Path, Path, Path]:
    """An Alembic environment with ``revisions``, a targets file naming it
    ``t`` and an (empty) instance folder."""
    ini = make_env(tmp_path / "env", revisions)
    targets = write_targets_file(tmp_path / "targets.toml", {"t": {
        "label": "T", "tier": "development", "alembic_ini": str(ini), "url_env": "T_URL"}})
    instance = tmp_path / "instance"
    instance.mkdir()
    return ini, targets, instance


def expected(ini: Path) -> dict:
    """The history read from source in this process, without any cache."""
    history = build_history(ini.parent, [ini.parent / "versions"])
    return {r.revision: [r.message, list(r.down_revisions), list(r.branch_labels),
                         list(r.depends_on), r.create_date, r.has_downgrade, r.path.name]
            for r in history.revisions}


def revisions() -> list[Rev]:
    """The branched graph (merge, depends_on, labelled second base) and a
    file without downgrade()."""
    revs = branched()
    revs.append(Rev("nd1", "x2", "no downgrade here", downgrade="pass"))
    return revs


def entries(instance: Path) -> list[Path]:
    return sorted((instance / "history-cache").glob("*/*.json"))


def test_second_process_reads_the_history_from_the_disk_cache_without_parsing(tmp_path):
    ini, targets, instance = project(tmp_path, revisions())
    (ini.parent / "versions" / "helpers.py").write_text("X = 1\n")  # not a revision
    files = sorted(p.name for p in (ini.parent / "versions").glob("*.py"))

    first = run_child(targets, instance)
    assert first["parsed"] == files  # cold: every file parsed ...
    assert len(entries(instance)) == len(files)  # ... and one entry written per file

    second = run_child(targets, instance)
    assert second["parsed"] == []  # warm from another process: nothing parsed
    assert second["revisions"] == first["revisions"] == expected(ini)
    assert second["heads"] == first["heads"]
    assert set(second["revisions"]) == {r.revision for r in revisions()}


def test_a_changed_file_is_parsed_again_even_with_the_same_size_and_mtime(tmp_path):
    revs = linear(8)
    ini, targets, instance = project(tmp_path, revs)
    run_child(targets, instance)
    changed = revs[4]
    path = ini.parent / "versions" / f"{changed.revision}_rev.py"
    before = path.stat()
    changed.message = "REVISION R004"  # same length as "revision r004"
    write_revision(ini.parent, changed)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size
    assert path.stat().st_mtime_ns == before.st_mtime_ns

    report = run_child(targets, instance)
    assert report["parsed"] == [path.name]  # only the changed file
    assert report["revisions"]["r004"][0] == "REVISION R004"
    assert report["revisions"] == expected(ini)

    again = run_child(targets, instance)  # its entry was rewritten
    assert again["parsed"] == []
    assert again["revisions"]["r004"][0] == "REVISION R004"


def test_corrupt_entries_are_ignored_and_rewritten(tmp_path):
    ini, targets, instance = project(tmp_path, linear(6))
    run_child(targets, instance)
    found = entries(instance)
    assert len(found) == 6
    by_file = {json.loads(p.read_bytes())["path"]: p for p in found}
    versions = ini.parent / "versions"
    damaged = {
        "r000_rev.py": b"{not json",  # torn or garbage
        "r001_rev.py": b"",  # empty
        "r002_rev.py": b"\xff\xfe\x00binary",  # not text
    }
    for name, data in damaged.items():
        by_file[str(versions / name)].write_bytes(data)
    wrong_shape = json.loads(by_file[str(versions / "r003_rev.py")].read_bytes())
    wrong_shape["info"]["down_revisions"] = "r002"  # a string, not a list
    by_file[str(versions / "r003_rev.py")].write_text(json.dumps(wrong_shape))
    # an entry for another file's path (e.g. copied by hand) is not used for this one
    by_file[str(versions / "r004_rev.py")].write_bytes(
        by_file[str(versions / "r005_rev.py")].read_bytes())

    report = run_child(targets, instance)
    assert report["parsed"] == sorted([*damaged, "r003_rev.py", "r004_rev.py"])
    assert report["revisions"] == expected(ini)
    again = run_child(targets, instance)
    assert again["parsed"] == []
    assert again["revisions"] == expected(ini)

    # a cache folder that cannot be used at all: files are parsed, no error
    shutil.rmtree(instance / "history-cache")
    (instance / "history-cache").write_text("a file where the folder should be")
    report = run_child(targets, instance)
    assert report["revisions"] == expected(ini)
    assert len(report["parsed"]) == 6


def test_processes_filling_the_cache_at_once(tmp_path):
    ini, targets, instance = project(tmp_path, linear(40))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(targets), str(instance)],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(4)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert all(r["revisions"] == expected(ini) for r in reports)
    folder = instance / "history-cache"
    assert len(entries(instance)) == 40
    assert not [p for p in folder.rglob("*") if p.is_file() and p.suffix != ".json"]
    assert run_child(targets, instance)["parsed"] == []


def test_create_app_keeps_the_cache_in_the_instance_folder(make_app, instance_path, tmp_path):
    ini = make_env(tmp_path / "env", linear(2))
    targets = write_targets_file(tmp_path / "targets.toml", {"t": {
        "label": "T", "tier": "development", "alembic_ini": str(ini), "url_env": "T_URL"}})
    app = make_app(targets)
    catalog = app.extensions["alembic_dashboard"]
    catalog.history(catalog.get("t"))
    assert len(entries(instance_path)) == 2
    for path in [instance_path / "history-cache", *entries(instance_path)[0].parents[:1]]:
        assert path.stat().st_mode & 0o777 == 0o700
    assert entries(instance_path)[0].stat().st_mode & 0o777 == 0o600


def test_a_file_with_computed_identifiers_is_not_parsed_again(tmp_path):
    """Its entry says the identifiers are not literals (and whether it has
    downgrade()): the next process goes straight to the target-side loader."""
    revs = linear(3)
    revs[2].downgrade = "pass"
    ini, targets, instance = project(tmp_path, revs)
    path = ini.parent / "versions" / "r002_rev.py"
    source = path.read_text().replace(
        "down_revision: Union[str, Sequence[str], None] = 'r001'", "down_revision = 'r0' + '01'")
    path.write_text(source.replace("def downgrade() -> None:\n    pass\n", ""))
    first = run_child(targets, instance)
    assert len(first["parsed"]) == 3
    assert first["revisions"]["r002"][1] == ["r001"]  # read target-side
    assert first["revisions"]["r002"][5] is False  # no downgrade()

    second = run_child(targets, instance)
    assert second["parsed"] == []
    assert second["revisions"] == first["revisions"]


def test_the_code_stamp_covers_every_module_that_decides_what_an_entry_holds(tmp_path,
                                                                              monkeypatch):
    """The cache folder is named by the source of the parser and of the entry
    format (not of the module that merely uses them): editing either must
    leave every old entry unread."""
    import inspect

    from webapp.core import parse_cache, revision_source

    stamped = {p.resolve() for p in parse_cache._STAMPED_SOURCES}
    for code in (revision_source.parse_revision_source, revision_source.source_has_downgrade,
                 revision_source.RevisionInfo, parse_cache.read_revision_file,
                 parse_cache.ParseCache):
        assert Path(inspect.getsourcefile(code)).resolve() in stamped, code
    copies = []
    for source in parse_cache._STAMPED_SOURCES:
        copies.append(tmp_path / source.name)
        shutil.copyfile(source, copies[-1])
    monkeypatch.setattr(parse_cache, "_STAMPED_SOURCES", tuple(copies))
    stamps = {parse_cache._parser_stamp()}
    for copy in copies:  # an edit to any of them gives a new folder
        copy.write_text(copy.read_text() + "# edited\n")
        stamps.add(parse_cache._parser_stamp())
    assert len(stamps) == 1 + len(copies)
