"""Issue 3 — the rules engine inside the running daemon, on the real broker: republish of
hot readings to alerts/<thing>, and hot reload that refuses a broken file."""
import json
import shutil
import signal
import time

import harness
from harness import Collector, read_lake, wait_until  # noqa: F401 (test_edge imports Collector from here)


def rules_dir(tmp_path, *names):
    d = tmp_path / "rules"
    d.mkdir(exist_ok=True)
    for n in names:
        shutil.copy(harness.REPO / "rules" / n, d / n)
    return d


def test_hot_readings_republished_exactly(broker, daemons, tmp_path):
    rd = rules_dir(tmp_path, "hot-alerts.json")
    sub = Collector(broker, "alerts/#")
    try:
        d = daemons(broker, extra=f"[ingest]\nrules_dir = {rd}\n")
        # spikes push two things above 28 C for a while; the rest stays in the low 20s
        summary = harness.Sim.run(broker, tmp_path, "--things", 4, "--count", 300, "--rate", 100, "--qos", 1,
                                  "--seed", 21, "--start-ts", 1795600800000, "--interval-ms", 1000,
                                  "--spike", "dev-0002:60:30:31.5", "--spike", "dev-0003:120:20:29.0")
        assert summary["acked"] >= 1200 and summary["failed"] == 0, summary  # >=: resends after a reconnect
        wait_until(lambda: d.metric("tidegate_messages_accepted_total") == 1200, 30)
        lake = read_lake(d.lake)
        expected = sorted((r["thing"], r["seq"]) for r in lake if r["temperature"] > 28)
        assert len(expected) >= 50, "the spikes should produce hot readings"
        wait_until(lambda: len(sub.snapshot()) >= len(expected), 10, what="all republished alerts")
        time.sleep(0.3)  # nothing more may arrive
        got = sub.snapshot()
    finally:
        sub.close()
    assert all(t == f"alerts/{p['thing']}" for t, p in got)
    seq_of = {(r["thing"], r["ts"]): r["seq"] for r in lake}
    received = sorted((p["thing"], seq_of[(p["thing"], p["ts"])]) for _, p in got)
    assert received == expected
    assert all(p["temperature"] > 28 and set(p) == {"sensor_id", "temperature", "ts", "thing"} for _, p in got)
    print(f"{len(expected)} hot readings out of 1200, {len(got)} republished")


def test_broken_rule_keeps_routing_and_logs_position(broker, daemons, tmp_path, certs):
    rd = rules_dir(tmp_path, "hot-alerts.json")
    sub = Collector(broker, "alerts/#")
    try:
        d = daemons(broker, extra=f"[ingest]\nrules_dir = {rd}\n")
        cert, key = certs.thing("dev-0001")

        def send(seq, temp):
            r = harness.mosquitto_pub(broker, cert, key, "devices/dev-0001/telemetry",
                                      [json.dumps({"sensor_id": "dev-0001", "ts": seq, "seq": seq,
                                                   "temperature": temp})])
            assert r.returncode == 0

        send(1, 30.0)
        wait_until(lambda: len(sub.snapshot()) == 1, 10)
        # a broken file lands in the folder: the running set stays
        (rd / "zz-broken.json").write_text('{\n  "sql": "SELECT * FROM \'devices/+/telemetry\' WHERE temperature >",\n'
                                           '  "actions": [{"republish": {"topic": "x"}}]\n}\n')
        wait_until(lambda: d.metric("tidegate_rules_reload_failures_total") == 1, 10, what="refused reload")
        log = d.log()
        assert f"{rd / 'zz-broken.json'}:2:" in log, log[-2000:]
        send(2, 31.0)
        send(3, 20.0)
        wait_until(lambda: len(sub.snapshot()) == 2, 10)
        # a valid change is picked up: raise the threshold to 30.5 through a new file
        (rd / "zz-broken.json").unlink()
        rule = json.loads((rd / "hot-alerts.json").read_text())
        rule["sql"] = rule["sql"].replace("temperature > 28", "temperature > 30.5")
        tmp = rd / ".hot.tmp"
        tmp.write_text(json.dumps(rule))
        tmp.rename(rd / "hot-alerts.json")
        wait_until(lambda: d.metric("tidegate_rules_reloads_total") >= 1, 10, what="reload")
        send(4, 30.0)   # below the new threshold
        send(5, 31.0)   # above it
        wait_until(lambda: len(sub.snapshot()) == 3, 10)
        # SIGHUP reloads too
        d.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: d.metric("tidegate_rules_reloads_total") >= 2, 10, what="SIGHUP reload")
        time.sleep(0.3)
        got = [p["ts"] for _, p in sub.snapshot()]
    finally:
        sub.close()
    assert got == [1, 2, 5]
    assert d.metric("tidegate_messages_accepted_total") == 5


def test_daemon_refuses_to_start_on_invalid_rules(broker, tmp_path):
    rd = tmp_path / "rules"
    rd.mkdir()
    (rd / "bad.json").write_text('{"sql": "SELECT FROM", "actions": []}')
    d = harness.Daemon(broker, tmp_path, extra=f"[ingest]\nrules_dir = {rd}\n")
    d.start(wait_connected=False)
    rc = d.proc.wait(20)
    assert rc != 0
    assert f"{rd / 'bad.json'}:1:" in d.log()


def test_reload_of_a_large_folder_under_load(broker, daemons, tmp_path):
    """Issue 19: a reload compiles beside the ingest loop. 600 rules (tests/bench/
    fleet_rules.py's mix) reloaded by SIGHUP five times in a row while telemetry flows: every
    message is accepted, every reload is counted (the ones asked for while one compiled
    are folded into one more), the compile time is published, and a rule changed on disk
    by the last reload is the one in force afterwards."""
    import sys
    sys.path.insert(0, str(harness.REPO / "tests" / "bench"))
    import fleet_rules
    rd = fleet_rules.make_rules(tmp_path / "rules", 600)
    sub = Collector(broker, "alerts/#")
    try:
        d = daemons(broker, extra=f"[ingest]\nrules_dir = {rd}\nwatch_rules = false\n")
        assert d.metric("tidegate_rules_reload_seconds") > 0  # the initial load is timed
        sim, sim_summary = harness.Sim.start(broker, tmp_path, "--things", 4, "--count", 500, "--rate", 200, "--qos", 1,
                                "--seed", 5, "--start-ts", 1795600800000, "--interval-ms", 1000)
        for _ in range(5):
            d.proc.send_signal(signal.SIGHUP)
            time.sleep(0.05)
        wait_until(lambda: d.metric("tidegate_rules_reloads_total") >= 2, 20, what="reloads")
        # the last change wins: the hot-alerts rule now fires on everything above -100
        rule = json.loads((rd / "hot-alerts.json").read_text())
        rule["sql"] = rule["sql"].replace("temperature > 28", "temperature > -100")
        (rd / "hot-alerts.json").write_text(json.dumps(rule))
        before = d.metric("tidegate_rules_reloads_total")
        d.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: d.metric("tidegate_rules_reloads_total") > before, 20, what="the last reload")
        sim.wait(60)
        summary = json.loads(sim_summary.read_text())
        assert summary["acked"] >= 2000 and summary["failed"] == 0, summary
        wait_until(lambda: d.metric("tidegate_messages_accepted_total") >= 2000, 30)
        n0 = len(sub.snapshot())
        send_ok = harness.Sim.run(broker, tmp_path, "--things", 1, "--count", 3, "--rate", 50, "--qos", 1,
                                  "--seed", 6, "--start-ts", 1795700800000, "--interval-ms", 1000)
        assert send_ok["acked"] == 3
        wait_until(lambda: len(sub.snapshot()) >= n0 + 3, 10, what="alerts from the changed rule")
    finally:
        sub.close()
    assert d.metric("tidegate_rules_reload_failures_total") == 0
    assert 0 < d.metric("tidegate_rules_reload_max_seconds") < 10
    assert d.metric("tidegate_rules_reload_cpu_seconds") > 0     # the compile ran on its thread
    assert 0 < d.metric("tidegate_rules_reload_swap_max_seconds") < 10  # the loop only swapped
    # six SIGHUPs: the first five fold into two or more compiles, the sixth is one of its own
    assert 3 <= d.metric("tidegate_rules_reloads_total") <= 6
