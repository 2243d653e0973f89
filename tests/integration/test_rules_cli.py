"""Issue 12 items 10 and 11 — `tidegate rules check/test` say what the daemon would do.

* `rules check -c CONFIG` checks sink names against the configuration (its rules_dir when no
  folder is named), as the daemon does at start; without -c it warns they were not checked.
* `rules test` prints the very bytes the daemon republishes (one JSON writer: 60.7 stays
  60.7): compared here with what a real MQTT subscriber receives from the running daemon.
* A payload the daemon would quarantine is reported with the reader's position; a folder is
  tested rule by rule; republish headers are shown.
* Each rule runs in its own awsIotSqlVersion (whole-number values: Int in 2016-03-23, Decimal
  in 2015-10-08), in `rules test` and in the daemon alike (issue 12 item 13).
"""
import contextlib
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


@contextlib.contextmanager
def alerts_subscriber(broker, certs, on_message):
    """A real MQTT subscriber of alerts/# (subscribed before the body runs), stopped after it."""
    ready = threading.Event()
    sub = harness.mqtt_client(broker, certs.dir / "ops.crt", certs.dir / "ops.key", f"ops-{time.monotonic_ns()}")
    sub.on_connect = lambda c, u, f, rc, p=None: c.subscribe("alerts/#", qos=1)
    sub.on_subscribe = lambda *a: ready.set()
    sub.on_message = lambda c, u, m: on_message(m)
    sub.connect("127.0.0.1", broker.port)
    sub.loop_start()
    try:
        assert ready.wait(10), "the subscription was not acknowledged"
        yield sub
    finally:
        sub.disconnect()
        sub.loop_stop()


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
    payload = '{"sensor_id":"dev-0004","ts":1795600800000,"temperature":60.7}'
    r = run("rules", "test", HOT, "--topic", "devices/dev-0004/telemetry", "--payload", payload)
    assert r.returncode == 0, r.stderr
    printed = r.stdout.split(" payload=", 1)[1].strip()
    assert '"temperature":60.7,' in printed, printed

    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "hot-alerts.json").write_text(HOT.read_text())
    got = []
    with alerts_subscriber(broker, certs, lambda m: got.append(m.payload.decode())):
        d = daemons(broker, extra=f"[ingest]\nrules_dir = {rules}\n")
        cert, key = certs.thing("dev-0004")
        assert harness.mosquitto_pub(broker, cert, key, "devices/dev-0004/telemetry", [payload]).returncode == 0
        wait_until(lambda: got, 15, what="the republished alert")
        d.stop()
    assert got == [printed], (got, printed)


def test_sql_version_per_rule_rules_test_and_daemon_agree(broker, daemons, certs, tmp_path):
    """awsIotSqlVersion is per rule: the same SQL in 2016-03-23 (the default, no key) processes
    the whole-number 60.0 and 10.0 as Ints, in 2015-10-08 they stay Decimals. `rules test`
    prints, and a real subscriber receives from the running daemon, the same bytes."""
    sql = ("SELECT temperature, temperature / 8 AS q, 10.0 / 4 AS lit, sql_version() AS v "
           "FROM 'devices/+/telemetry' WHERE sensor_id = 'whole'")
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "v1.json").write_text(json.dumps({"sql": sql, "awsIotSqlVersion": "2015-10-08",
                                               "actions": [{"republish": {"topic": "alerts/${topic(2)}/v1",
                                                                          "qos": 1}}]}))
    (rules / "v2.json").write_text(json.dumps({"sql": sql, "actions": [{"republish": {"topic":
                                                                                       "alerts/${topic(2)}/v2",
                                                                                       "qos": 1}}]}))
    payload = '{"sensor_id":"whole","ts":1795600800000,"temperature":60.0}'
    r = run("rules", "test", rules, "--topic", "devices/dev-0005/telemetry", "--payload", payload)
    assert r.returncode == 0, r.stderr
    printed = {ln.split(" ", 1)[0]: ln.split(" payload=", 1)[1] for ln in r.stdout.splitlines() if " payload=" in ln}
    assert printed == {"v1": '{"temperature":60.0,"q":7.5,"lit":2.5,"v":"2015-10-08"}',
                       "v2": '{"temperature":60,"q":7,"lit":2,"v":"2016-03-23"}'}, r.stdout
    # a bad version is refused with its position, by rules check as by the daemon's loader
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.json").write_text('{"sql": "SELECT * FROM \'a\'",\n "awsIotSqlVersion": "beta", "actions": []}')
    r = run("rules", "check", bad)
    assert r.returncode == 1 and f'{bad}/x.json:2:22: awsIotSqlVersion "beta" is not supported' in r.stderr, r.stderr

    got = {}
    with alerts_subscriber(broker, certs,
                           lambda m: got.setdefault(m.topic.rsplit("/", 1)[1], []).append(m.payload.decode())):
        d = daemons(broker, extra=f"[ingest]\nrules_dir = {rules}\n")
        cert, key = certs.thing("dev-0005")
        assert harness.mosquitto_pub(broker, cert, key, "devices/dev-0005/telemetry", [payload]).returncode == 0
        wait_until(lambda: len(got) == 2, 15, what="both republished messages")
        d.stop()
    assert got == {k: [v] for k, v in printed.items()}, (got, printed)
