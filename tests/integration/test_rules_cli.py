"""Issue 12 items 10 and 11 — `tidegate rules check/test` say what the daemon would do.

* `rules check -c CONFIG` checks sink names against the configuration (its rules_dir when no
  folder is named), as the daemon does at start; without -c it warns they were not checked.
* `rules test` prints the very bytes the daemon republishes (one JSON writer: 60.7 stays
  60.7): compared here with what a real MQTT subscriber receives from the running daemon.
* A payload the daemon would quarantine is reported with the reader's position; a folder is
  tested rule by rule; republish headers are shown.
"""
import json
import subprocess
import threading
import time

import harness
from harness import wait_until

TIDEGATE = harness.BUILD / "tidegate"
HOT = harness.REPO / "rules" / "hot-alerts.json"
ROUTE_NOWHERE = {"sql": "SELECT * FROM 'devices/+/telemetry'", "actions": [{"sink": {"name": "nowhere"}}]}


def run(*args, stdin=None):
    return subprocess.run([TIDEGATE, *map(str, args)], capture_output=True, text=True, input=stdin, timeout=30)


def conf_with_rules(tmp_path, rules):
    conf = tmp_path / "t.conf"
    conf.write_text(f"data_dir = {tmp_path}/data\n[broker]\ntls = false\n[ingest]\nrules_dir = {rules}\n")
    return conf


def test_rules_check_with_config_checks_sink_names(tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "route.json").write_text(json.dumps(ROUTE_NOWHERE))
    conf = conf_with_rules(tmp_path, rules)
    r = run("rules", "check", "-c", conf)  # no folder: the configuration's rules_dir
    assert r.returncode == 1, r.stdout
    assert f"{rules}/route.json:1:" in r.stderr and "no sink named 'nowhere' is configured" in r.stderr, r.stderr
    # the daemon refuses it the same way
    assert run("check-config", "-c", conf).returncode == 2
    # without the configuration: accepted, with a warning that sink names were not checked
    r = run("rules", "check", rules)
    assert r.returncode == 0, r.stderr
    assert "warning: sink names were not checked" in r.stderr, r.stderr
    # the lake is there (built in): the same rule routed to it passes against the config
    (rules / "route.json").write_text(json.dumps({**ROUTE_NOWHERE, "actions": [{"sink": {"name": "lake"}}]}))
    r = run("rules", "check", "-c", conf, rules)
    assert r.returncode == 0 and f"sink names checked against {conf}" in r.stdout, (r.stdout, r.stderr)
    # a broken configuration is reported, not silently ignored
    bad = tmp_path / "bad.conf"
    bad.write_text("[broker]\ntls = maybe\n")
    r = run("rules", "check", "-c", bad, rules)
    assert r.returncode == 2 and f"{bad}:2:7: option 'tls'" in r.stderr, r.stderr


def test_rules_test_reports_payload_errors_and_folders():
    r = run("rules", "test", HOT, "--topic", "devices/d1/telemetry",
            "--payload", '{"sensor_id": "s", "temperature": 31.5')
    assert r.returncode == 1, r.stdout
    assert "quarantined before any rule runs (reason bad_json): 1:" in r.stderr, r.stderr
    assert "WHERE did not hold" not in r.stdout
    r = run("rules", "test", harness.REPO / "rules", "--topic", "devices/d1/telemetry",
            "--payload", '{"sensor_id": "s", "ts": 1, "temperature": 45}')
    assert r.returncode == 0, r.stderr
    assert "hot-alerts republish: topic=alerts/d1 qos=1" in r.stdout and "high-temperature-alert alert:" in r.stdout


def test_rules_test_prints_what_the_daemon_republishes(broker, daemons, certs, tmp_path):
    import paho.mqtt.client as mqtt
    payload = '{"sensor_id":"dev-0004","ts":1795600800000,"temperature":60.7}'
    r = run("rules", "test", HOT, "--topic", "devices/dev-0004/telemetry", "--payload", payload)
    assert r.returncode == 0, r.stderr
    printed = r.stdout.split(" payload=", 1)[1].strip()
    assert '"temperature":60.7,' in printed, printed

    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "hot-alerts.json").write_text(HOT.read_text())
    got, ready = [], threading.Event()
    sub = harness.mqtt_client(broker, certs.dir / "ops.crt", certs.dir / "ops.key", f"ops-{time.monotonic_ns()}")
    sub.on_connect = lambda c, u, f, rc, p=None: c.subscribe("alerts/#", qos=1)
    sub.on_subscribe = lambda *a: ready.set()
    sub.on_message = lambda c, u, m: got.append(m.payload.decode())
    sub.connect("127.0.0.1", broker.port)
    sub.loop_start()
    try:
        assert ready.wait(10)
        d = daemons(broker, extra=f"[ingest]\nrules_dir = {rules}\n")
        cert, key = certs.thing("dev-0004")
        assert harness.mosquitto_pub(broker, cert, key, "devices/dev-0004/telemetry", [payload]).returncode == 0
        wait_until(lambda: got, 15, what="the republished alert")
        d.stop()
    finally:
        sub.disconnect()
        sub.loop_stop()
    assert got == [printed], (got, printed)
