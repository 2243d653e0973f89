"""The layout check (issue 14): gateway/'s includes follow the stage order, and the check
itself refuses an include against the flow, a folder it does not know and a path that is
not relative to gateway/. It runs on a copy of the tree, so the real tree is never edited."""
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CHECK = os.path.join(ROOT, "tests", "layout", "check_includes.py")


def run(root):
    return subprocess.run([sys.executable, CHECK, root], capture_output=True, text=True, timeout=60)


def copy_tree(tmp_path):
    dst = tmp_path / "tree"
    shutil.copytree(os.path.join(ROOT, "gateway"), dst / "gateway",
                    ignore=shutil.ignore_patterns("www"))
    return dst


def append_include(path, inc):
    text = path.read_text()
    first = text.index("#include")
    path.write_text(text[:first] + f'#include "{inc}"\n' + text[first:])


def test_tree_follows_the_stage_order():
    r = run(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == ""


def test_core_reaching_up_is_refused(tmp_path):
    tree = copy_tree(tmp_path)
    append_include(tree / "gateway" / "core" / "config.c", "store/sink.h")
    r = run(str(tree))
    assert r.returncode == 1
    assert 'gateway/core/config.c:' in r.stdout and '"store/sink.h" of store/' in r.stdout


def test_stage_including_the_wiring_is_refused(tmp_path):
    tree = copy_tree(tmp_path)
    append_include(tree / "gateway" / "ops" / "metrics.c", "daemon.h")
    r = run(str(tree))
    assert r.returncode == 1
    assert '"daemon.h" of the wiring' in r.stdout


def test_unknown_folder_and_relative_paths_are_refused(tmp_path):
    tree = copy_tree(tmp_path)
    (tree / "gateway" / "misc").mkdir()
    (tree / "gateway" / "misc" / "x.c").write_text('#include "core/err.h"\n')
    append_include(tree / "gateway" / "edge" / "dedupe.c", "../core/err.h")
    append_include(tree / "gateway" / "rules" / "eval.c", "err.h")
    r = run(str(tree))
    assert r.returncode == 1
    assert "folder misc/ is not a stage folder" in r.stdout
    assert '"../core/err.h": include paths are relative to gateway/' in r.stdout
    assert re.search(r'gateway/rules/eval.c:\d+: "err.h" is not a file under gateway/', r.stdout)


def test_the_wiring_may_include_every_stage(tmp_path):
    tree = copy_tree(tmp_path)
    append_include(tree / "gateway" / "ingest.c", "ops/metrics.h")
    assert run(str(tree)).returncode == 0
