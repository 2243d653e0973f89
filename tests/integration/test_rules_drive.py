"""tests/tools/rules_drive on the fleet benchmark's rule folders (issue 19).

The tool evaluates device telemetry against whole rules folders and reports, per folder,
the rules whose FROM matched per message and the rules that fired; the fleet benchmark's
rules row and the profile behind its fix rely on it. Here it runs the shipped rules alone
(10 rules: the two shipped ones plus eight of tests/bench/fleet_rules.py's mix) and with 100
(four more that read device telemetry, with a WHERE the messages never meet, and the rest
on other topics). Adding rules that never hold must change nothing the shipped ones do: the
same number fire, the same actions run, and exactly the extra telemetry rules are evaluated.
"""
import re
import subprocess
import sys

import harness

sys.path.insert(0, str(harness.REPO / "tests" / "bench"))
import fleet_rules  # noqa: E402

LINE = re.compile(r"^(\S+) rules=(\d+) evaluated=([\d.]+) matched=(\d+) actions=(\d+) cpu_s_per_1m=([\d.]+)")


def test_fleet_folders_fire_the_same_rules(tmp_path):
    few = fleet_rules.make_rules(tmp_path / "r10", 10)
    many = fleet_rules.make_rules(tmp_path / "r100", 100)
    r = subprocess.run([harness.BUILD / "tools" / "rules_drive", "--messages", "20000", "--reps", "1", few, many],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    got = {}
    for ln in r.stdout.splitlines():
        m = LINE.match(ln)
        if m:
            got[m.group(1)] = dict(rules=int(m.group(2)), evaluated=float(m.group(3)), matched=int(m.group(4)),
                                   actions=int(m.group(5)), cpu=float(m.group(6)))
    a, b = got[str(few)], got[str(many)]
    shipped = len(list((harness.REPO / "rules").glob("*.json")))
    extra = [i for i in range(100 - shipped) if i % 20 == 19]  # fleet_rules.py's telemetry rules
    assert a["rules"] == 10 and b["rules"] == 100, got
    assert a["evaluated"] == shipped and b["evaluated"] == shipped + len(extra), got
    # some readings are above the shipped hot-alerts threshold (28): those fire, nothing else
    assert a["matched"] > 0 and b["matched"] == a["matched"] and b["actions"] == a["actions"], got
    assert a["cpu"] > 0 and b["cpu"] > 0, got
    assert re.search(r"^ratio \S+ = [\d.]+", r.stdout, re.M), r.stdout
