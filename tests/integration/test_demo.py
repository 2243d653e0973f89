"""Issue 12 item 18 — `make demo` shows what it says: the shipped hot-alerts rule's
republishes on alerts/<thing> reach the demo's subscriber, and each tick's [lake] line is
the newest record in the lake (a new one every tick), not the same rotated one again.

The demo runs for real (broker, daemon, simulator) with its files in the test's folder."""
import json
import os
import re
import signal
import subprocess

import pytest

import harness


@pytest.mark.slow  # about 20 s: the demo runs for 10 s; the first pass of `make check` runs it
def test_demo_shows_hot_alerts_and_the_newest_lake_record(tmp_path):
    env = dict(os.environ, DEMO_DIR=str(tmp_path / "demo"), DEMO_CERTS=str(tmp_path / "certs"),
               DEMO_BIN=str(harness.BUILD), DEMO_SECONDS="10", DEMO_TICK="1")
    p = subprocess.Popen([harness.REPO / "packaging" / "demo.sh"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, env=env, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        raise AssertionError(f"the demo did not stop:\n{out[-3000:]}")
    assert p.returncode == 0, out[-3000:]
    # hot-alerts: the dev-0002 spike (45 C from second 6) republished on alerts/<thing>
    hot = [ln for ln in out.splitlines() if re.match(r"^\s+\[broker\] alerts/dev-\d{4} \{", ln)]
    assert hot, out[-3000:]
    topic, payload = hot[0].split("] ", 1)[1].split(" ", 1)
    assert json.loads(payload)["temperature"] > 28 and json.loads(payload)["thing"] == topic.split("/")[1]
    # the lake line of each tick is the newest record: later ticks show later records (the
    # line is cut at 200 characters; msg_id comes first)
    lake = [ln.split("[lake] ", 1)[1] for ln in out.splitlines() if "[lake] " in ln]
    assert len(lake) >= 3, out[-3000:]
    ids = [int(re.match(r'\{"msg_id":"gw-demo-(\d+)"', x).group(1)) for x in lake]
    assert ids == sorted(ids) and len(set(ids)) == len(ids), ids
