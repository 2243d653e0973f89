"""Issue 19 — the fleet benchmark's harness at smoke scale, so `make bench-fleet` cannot rot.

Runs tests/bench/fleet.py with FLEET_SCALE=smoke (50 per-thing mTLS connections, a 500-thing
registry, 100 rules, edge state at 200 and 1,000 things; about a minute) into a temporary
folder and checks what it counted, not its speed (speed lives in `make bench-fleet`): every
connection got a CONNACK from both brokers, every message published by the fleet reached
the counting subscriber and tidegate's lake, the registry CLI answered, the rule runs and
reloads completed with every message in the lake, and edge state was measured.
"""
import json
import os
import subprocess
import sys

import pytest

import harness


@pytest.mark.slow
def test_fleet_harness_smoke(tmp_path):
    build = os.environ.get("TIDEGATE_BUILD", str(harness.REPO / "build" / "rel"))
    subprocess.run([harness.REPO / "certs" / "make-certs.sh", harness.REPO / "certs" / "out"], check=True,
                   capture_output=True)
    env = dict(os.environ, B=os.path.dirname(build), FLEET_SCALE="smoke", FLEET_OUT=str(tmp_path / "out"))
    r = subprocess.run([sys.executable, harness.REPO / "tests" / "bench" / "fleet.py"], capture_output=True,
                       text=True, timeout=900, env=env)
    print(r.stdout[-4000:])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    raw = json.loads((tmp_path / "out" / "fleet.json").read_text())
    things = raw["params"]["things"]
    c = raw["connections"]
    for name in ("acl", "plugin", "tidegate"):
        fl = c[name]["fleet"]
        assert fl["connected"] == things and fl["refused"] == 0, (name, fl)
        assert fl["sent"] > 0 and fl["acked"] == fl["sent"] and fl["unacked"] == 0, (name, fl)
        assert 0 < fl["connect_ms"]["p50"] <= fl["connect_ms"]["p99"], (name, fl)
        assert c[name]["complete"], (name, c[name])
    assert c["acl"]["received"] >= c["acl"]["fleet"]["acked"]
    assert c["tidegate"]["lake_lines"] >= c["tidegate"]["fleet"]["acked"]
    assert c["ratio_e2e"] > 0
    g = raw["registry"]
    assert g["plugin_checks_per_cpu_s"] > 0
    assert all(v["rc"] == 0 for v in g["cli"].values()), g["cli"]
    assert g["cli"]["list"]["lines"] == raw["params"]["registry"] + 1      # header + every thing
    assert g["cli"]["list_page"]["lines"] == 50 + 1                         # header + one page
    rl = raw["rules"]
    assert all(x["complete"] for x in rl["few"] + rl["many"])
    assert rl["reload"]["reloads_done"] >= 1 and rl["reload"]["reload_seconds_max"] > 0
    assert rl["reload"]["lake"] >= rl["reload"]["acked"] and rl["no_reload"]["lake"] >= rl["no_reload"]["acked"]
    small, large = raw["params"]["edge"]
    assert [(e["things"], e["variant"]) for e in raw["edge"]] == [
        (small, "schemas only, dedupe_per_thing 4"), (small, "schemas only"), (small, "+ shipped rules"), (small, "+ aggregates"), (large, "+ aggregates")]
    assert all(e["anon_mib"]["after"] > e["anon_mib"]["before"] for e in raw["edge"])
    assert (tmp_path / "out" / "fleet.md").read_text().startswith("# Fleet benchmark (smoke scale")
