"""Issue 5 end to end: the product broker config with the auth plugin, the registry CLI,
and the daemon trusting the identity the plugin stamps and enriching from the registry."""
import json
import subprocess
import time

import harness
from harness import read_lake, wait_until


def device(db, *args):
    r = subprocess.run([harness.BUILD / "tidegate", "device", "--db", db, *[str(a) for a in args]],
                       capture_output=True, text=True)
    return r


def pub(broker, certs, thing, topic, payload, props=()):
    cert, key = certs.thing(thing)
    argv = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "--cafile", str(certs.ca),
            "--cert", str(cert), "--key", str(key), "-i", thing, "-q", "1", "-t", topic, "-m", payload,
            "-V", "mqttv5"]
    for name, value in props:
        argv += ["-D", "PUBLISH", "user-property", name, value]
    return subprocess.run(argv, capture_output=True, text=True, timeout=20)


def test_plugin_registry_and_daemon(certs, tmp_path):
    db = tmp_path / "registry.db"
    for i, site in ((1, "plant-7"), (2, "plant-9"), (3, "plant-7")):
        r = device(db, "register", f"dev-000{i}", "--cert", certs.thing(f"dev-000{i}")[0], "--attr", f"site={site}")
        assert r.returncode == 0, r.stderr
    dup = device(db, "register", "dev-0009", "--cert", certs.thing("dev-0001")[0])
    assert dup.returncode != 0 and "already registered" in dup.stderr
    plugin = harness.BUILD / "tidegate_auth.so"
    b = harness.Broker(certs, tmp_path, extra_args=["--plugin", plugin, "--registry", db]).start()
    try:
        d = harness.Daemon(b, tmp_path, extra=f"[ingest]\nenrich = true\n[registry]\npath = {db}\n"
                                              "[broker]\nidentity = stamped\n").start()
        try:
            msg = lambda seq: json.dumps({"sensor_id": "x", "ts": seq, "seq": seq, "temperature": 21.0})
            outcomes = []
            r = pub(b, certs, "dev-0001", "devices/dev-0001/telemetry", msg(1), [("tidegate-thing", "dev-0002")])
            outcomes.append(("dev-0001, forged identity property", r.returncode))
            assert r.returncode == 0, r.stderr
            r = pub(b, certs, "dev-0004", "devices/dev-0004/telemetry", msg(2))
            outcomes.append(("dev-0004, not registered", r.returncode))
            assert r.returncode != 0
            r = pub(b, certs, "dev-0003", "devices/dev-0003/telemetry", msg(3))
            outcomes.append(("dev-0003, registered", r.returncode))
            assert r.returncode == 0
            assert device(db, "deactivate", "dev-0003").returncode == 0
            time.sleep(1.0)  # the plugin applies registry changes within 1 s
            r = pub(b, certs, "dev-0003", "devices/dev-0003/telemetry", msg(4))
            outcomes.append(("dev-0003, deactivated", r.returncode))
            assert r.returncode != 0
            for name, rc in outcomes:
                print(f"{name:40} rc={rc}")
            wait_until(lambda: d.metric("tidegate_messages_accepted_total") == 2, 10)
            time.sleep(0.3)
        finally:
            d.stop()
    finally:
        b.stop()
    recs = {r["seq"]: r for r in read_lake(d.lake)}
    assert set(recs) == {1, 3}
    assert recs[1]["thing"] == "dev-0001"  # the plugin replaced the forged property
    assert recs[1]["attributes"] == {"site": "plant-7"}
    assert recs[3]["attributes"] == {"site": "plant-7"}


def test_activate_revoked_thing_refused(certs, tmp_path):
    """Issue 12 item 12: activating a thing whose every certificate is revoked is an error
    that says so, not "0 certificates set ACTIVE" with exit 0."""
    db = tmp_path / "registry.db"
    assert device(db, "register", "dev-0006", "--cert", certs.thing("dev-0006")[0]).returncode == 0
    r = device(db, "revoke", "dev-0006")
    assert r.returncode == 0, r.stderr
    for cmd in ("activate", "deactivate"):
        r = device(db, cmd, "dev-0006")
        assert r.returncode != 0, (cmd, r.stdout)
        assert 'the certificate of "dev-0006" is revoked; revocation is final' in r.stderr, r.stderr
        assert "certificates set" not in r.stdout and "certificate set" not in r.stdout, r.stdout
    listed = device(db, "list", "--json")
    assert json.loads(listed.stdout)[0]["status"] == "REVOKED", listed.stdout
