"""Issue 2 — the first working slice, end to end on a real mTLS mosquitto.

Every assertion counts records at the far end (the lake folder) or observes the broker
refusing a client; nothing is mocked.
"""
import json
import signal
import subprocess
import time
from collections import Counter

import harness
from harness import read_lake, wait_until


def lake_count(d, table="telemetry"):
    return len(read_lake(d.lake, table))


def test_five_things_2000_each_exactly_once(broker, daemons, tmp_path):
    d = daemons(broker)
    summary = harness.Sim.run(broker, tmp_path, "--things", 5, "--count", 2000, "--qos", 1, "--max-rate",
                              "--seed", 42)
    assert summary["sent"] == 10000 and summary["acked"] >= 10000 and summary["failed"] == 0, summary
    wait_until(lambda: d.metric("tidegate_sink_records_total{sink=\"lake\",outcome=\"ok\"}", 0) >= 10000, 60,
               what="10000 records in the lake")
    d.stop()
    recs = read_lake(d.lake)
    assert len(recs) == 10000
    assert len({r["msg_id"] for r in recs}) == 10000
    per_thing = Counter(r["thing"] for r in recs)
    assert per_thing == {f"dev-{i:04d}": 2000 for i in range(1, 6)}
    # the device's fields are kept and the gateway's are added
    r = recs[0]
    for k in ("sensor_id", "ts", "temperature", "humidity", "pressure", "thing", "topic", "received_at", "msg_id"):
        assert k in r, (k, r)
    assert r["topic"] == f"devices/{r['thing']}/telemetry"
    assert r["received_at"].endswith("Z") and "T" in r["received_at"]
    # Hive layout, finished files only after a clean stop
    files = harness.lake_files(d.lake)
    assert files and all("/year=" in str(f) and "/month=" in str(f) and "/day=" in str(f) and "/hour=" in str(f)
                         for f in files)
    assert not [f for f in files if f.name.startswith(".")], "in-progress files left after a clean stop"


def _pub(broker, cert, key, topic, msg, client_id=None, extra=()):
    argv = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "--cafile", str(broker.certs.ca),
            "-q", "1", "-t", topic, "-m", msg, "-V", "mqttv5", *extra]
    if cert:
        argv += ["--cert", str(cert), "--key", str(key)]
    if client_id:
        argv += ["-i", client_id]
    return subprocess.run(argv, capture_output=True, text=True, timeout=20)


def test_refused_clients(broker, daemons, certs):
    d = daemons(broker)
    msg = json.dumps({"sensor_id": "dev-0001", "ts": 1, "temperature": 20.0})
    good = _pub(broker, *certs.thing("dev-0001"), "devices/dev-0001/telemetry", msg)
    assert good.returncode == 0, good.stderr
    no_cert = _pub(broker, None, None, "devices/dev-0001/telemetry", msg)
    other_ca = _pub(broker, certs.dir / "other-ca" / "dev-0001.crt", certs.dir / "other-ca" / "dev-0001.key",
                    "devices/dev-0001/telemetry", msg)
    revoked = _pub(broker, certs.dir / "revoked" / "dev-revoked.crt", certs.dir / "revoked" / "dev-revoked.key",
                   "devices/dev-revoked/telemetry", msg)
    table = [("dev-0001 (valid cert)", good), ("no client certificate", no_cert), ("cert from another CA", other_ca),
             ("revoked cert", revoked)]
    for name, r in table:
        print(f"{name:28} rc={r.returncode} {r.stderr.strip()[:80]}")
    assert no_cert.returncode != 0 and other_ca.returncode != 0 and revoked.returncode != 0
    wait_until(lambda: lake_count(d) >= 1 and d.metric("tidegate_messages_received_total") >= 1, 10)
    d.stop()
    things = [r["thing"] for r in read_lake(d.lake)]
    assert things == ["dev-0001"], things


def test_cross_device_publish_not_delivered(broker, daemons, certs):
    d = daemons(broker)
    spoof = _pub(broker, *certs.thing("dev-0001"), "devices/dev-0002/telemetry",
                 json.dumps({"sensor_id": "dev-0002", "ts": 1, "temperature": 99.0, "spoofed": True}))
    own = _pub(broker, *certs.thing("dev-0001"), "devices/dev-0001/telemetry",
               json.dumps({"sensor_id": "dev-0001", "ts": 2, "temperature": 20.0}))
    assert own.returncode == 0, own.stderr
    print("spoof publish:", spoof.returncode, spoof.stderr.strip())
    wait_until(lambda: lake_count(d) >= 1, 10, what="the control message")
    time.sleep(0.3)  # give a wrongly delivered spoof the same chance to arrive
    d.stop()
    recs = read_lake(d.lake)
    assert [r["thing"] for r in recs] == ["dev-0001"]
    assert not any(r.get("spoofed") for r in recs)


def test_malformed_payloads_quarantined_with_reasons(broker, daemons, certs):
    d = daemons(broker)
    cert, key = certs.thing("dev-0003")
    bad = []
    for i in range(50):
        kind = i % 5
        if kind == 0:
            bad.append('{"sensor_id": "dev-0003", "ts": %d, "temperature": ' % i)  # truncated
        elif kind == 1:
            bad.append('[1, 2, %d]' % i)  # not an object
        elif kind == 2:
            bad.append('"just a string %d"' % i)
        elif kind == 3:
            bad.append('{"a":' * 40 + '1' + '}' * 40)  # too deep
        else:
            bad.append('{"sensor_id": "dev-0003", "ts": %d, "ts": %d}' % (i, i))  # duplicate key
    good = [json.dumps({"sensor_id": "dev-0003", "ts": 1000 + i, "temperature": 20 + i / 10}) for i in range(30)]
    msgs = []
    for i in range(50):
        msgs.append(bad[i])
        if i < 30:
            msgs.append(good[i])
    r = harness.mosquitto_pub(broker, cert, key, "devices/dev-0003/telemetry", msgs)
    assert r.returncode == 0, r.stderr
    wait_until(lambda: lake_count(d) == 30 and lake_count(d, "quarantine") == 50, 15,
               what="30 good + 50 quarantined")
    m = d.metrics()
    d.stop()
    q = read_lake(d.lake, "quarantine")
    reasons = Counter(x["reason"] for x in q)
    assert reasons == {"bad_json": 10, "duplicate_key": 10, "not_object": 20, "too_deep": 10}, reasons
    assert all(x["thing"] == "dev-0003" and x["detail"] and "payload" in x for x in q)
    assert m["tidegate_messages_quarantined_total"] == 50
    assert m['tidegate_quarantine_total{reason="bad_json"}'] == 10
    assert m['tidegate_quarantine_total{reason="duplicate_key"}'] == 10
    assert sorted(r["ts"] for r in read_lake(d.lake)) == list(range(1000, 1030))


def test_sigterm_mid_stream_loses_nothing(broker, daemons, tmp_path):
    d = daemons(broker)
    sim, summary_path = harness.Sim.start(broker, tmp_path, "--things", 5, "--count", 1500, "--rate", 200,
                                          "--qos", 1, "--seed", 7)
    wait_until(lambda: lake_count(d) > 500, 30, what="stream under way")
    assert d.stop() == 0
    stopped_at = lake_count(d)
    time.sleep(0.5)  # the stream goes on into the broker's persistent session for us
    d.start()
    assert sim.wait(120) == 0, sim.text()
    summary = json.loads(summary_path.read_text())
    # a device that reconnects under load resends what was not yet acknowledged (acked may exceed sent)
    assert summary["failed"] == 0 and summary["acked"] >= 7500, summary
    wait_until(lambda: lake_count(d) >= 7500, 60, what="all 7500 records")
    d.stop()
    recs = read_lake(d.lake)
    keys = Counter((r["thing"], r["seq"]) for r in recs)
    dups = sum(v - 1 for v in keys.values() if v > 1)
    print(f"stopped with {stopped_at} in the lake; after restart {len(recs)} records, duplicates={dups}")
    for k, v in keys.items():
        if v > 1:
            print("duplicate", k, [(r["msg_id"], r["received_at"]) for r in recs if (r["thing"], r["seq"]) == k])
    assert len(keys) == 7500, f"lost {7500 - len(keys)}"
    # Delivery is at-least-once: a clean stop normally re-delivers nothing (the daemon
    # closes without a RST, so the broker reads every PUBACK), but a device that times out
    # and resends under load can still produce a rare duplicate with a new msg_id.
    assert dups <= 10, f"{dups} duplicates"
    assert len({r["msg_id"] for r in recs}) == len(recs)
