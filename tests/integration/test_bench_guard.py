"""Issue 19 — the throughput regression guard (tests/bench/guard.py) and its history file.

The decision logic is tested on its own with made-up rows (it must fail on a regression
that shows in every attempt and pass when one attempt is within 10 %); then the guard
itself runs against the committed bench/results/history.tsv: on a machine class with a
committed "guard" row it fails when the quick end-to-end ratio drops more than 10 % below
it (in every one of three attempts), elsewhere it measures and says there is no baseline.
"""
import os
import subprocess
import sys

import pytest

import harness

sys.path.insert(0, str(harness.REPO / "tests" / "bench"))
import history  # noqa: E402


def test_history_rows_and_baseline(tmp_path):
    p = tmp_path / "history.tsv"
    history.append("guard", 10000.0, 9700.0, 30.5, 14.2, 0.8, path=p)
    history.append("full", 12000.0, 12000.0, 29.0, 15.0, 0.9, path=p)
    history.append("guard", 10000.0, 9000.0, 31.0, 14.0, 0.7, path=p)
    rows = history.parse(p.read_text())
    assert [r["kind"] for r in rows] == ["guard", "full", "guard"]
    assert p.read_text().splitlines()[0].split("\t") == history.COLUMNS
    me = history.machine_class()
    assert history.baseline(rows, "guard", me) == pytest.approx(0.9)  # the last guard row wins
    assert history.baseline(rows, "full", me) == pytest.approx(1.0)
    assert history.baseline(rows, "guard", "1cpu-other") is None
    assert history.baseline(rows, "quick", me) is None


def test_verdict_needs_every_attempt_below_the_floor():
    assert history.verdict(None, [0.1]) == "none"
    assert history.verdict(1.0, [0.95]) == "pass"
    assert history.verdict(1.0, [0.90]) == "pass"           # exactly 10 % below: allowed
    assert history.verdict(1.0, [0.89]) == "fail"
    assert history.verdict(1.0, [0.70, 0.85, 0.89]) == "fail"
    assert history.verdict(1.0, [0.70, 0.93]) == "pass"     # one attempt in a quiet moment is enough


@pytest.mark.slow
def test_guard_against_the_committed_baseline(tmp_path):
    build = os.environ.get("TIDEGATE_BUILD", str(harness.REPO / "build" / "rel"))
    env = dict(os.environ, B=os.path.dirname(build))
    subprocess.run([harness.REPO / "certs" / "make-certs.sh", harness.REPO / "certs" / "out"], check=True,
                   capture_output=True)
    r = subprocess.run([sys.executable, harness.REPO / "tests" / "bench" / "guard.py"], capture_output=True,
                       text=True, timeout=600, env=env)
    print(r.stdout[-3000:])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "guard: ok, ratio" in r.stdout or "no committed baseline" in r.stdout
