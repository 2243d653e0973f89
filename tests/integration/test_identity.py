"""Issue 12 item 1 — nothing a device sends is trusted for identity.

A device (dev-0002's certificate and client id) publishes on its own topic with a forged
`tidegate-thing = dev-0001` user property, the way `mosquitto_pub -D publish user-property`
sends it. In both broker modes — CA + ACL file, and registry + the tidegate auth plugin — and
with both `[broker] identity` settings the daemon allows there, the lake record must name the
real publisher. `identity = stamped` against a broker that does not stamp (no plugin) must
refuse to run, and say why.
"""
import json
import subprocess

import pytest

import harness
from harness import read_lake, wait_until

FORGED = "dev-0001"
REAL = "dev-0002"


def pub_forged(broker, certs, thing, seq, claim=FORGED):
    cert, key = certs.thing(thing)
    argv = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "--cafile", str(certs.ca),
            "--cert", str(cert), "--key", str(key), "-i", thing, "-V", "mqttv5", "-q", "1",
            "-t", f"devices/{thing}/telemetry", "-D", "publish", "user-property", "tidegate-thing", claim,
            "-m", json.dumps({"sensor_id": "x", "ts": seq, "seq": seq, "temperature": 22.2})]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    return r


def records_by_seq(d, n):
    wait_until(lambda: len(read_lake(d.lake)) >= n, 15, what=f"{n} records in the lake")
    d.stop()
    return {r["seq"]: r for r in read_lake(d.lake)}


def test_acl_broker_topic_identity_ignores_forged_property(broker, daemons, certs):
    d = daemons(broker)  # the default: [broker] identity = topic
    pub_forged(broker, certs, REAL, 1)
    recs = records_by_seq(d, 1)
    assert recs[1]["thing"] == REAL, recs[1]
    assert recs[1]["topic"] == f"devices/{REAL}/telemetry"


def test_acl_broker_refuses_stamped_identity(broker, tmp_path):
    # not the daemons fixture: it fails a test whose daemon exits non-zero
    d = harness.Daemon(broker, tmp_path, extra="[broker]\nidentity = stamped\n")
    d.start(wait_connected=False)
    try:
        rc = d.proc.wait(30)
    finally:
        d.stop()
    log = d.log()
    assert rc == 1, log
    assert "the broker passed a forged 'tidegate-thing' user property through unchanged" in log, log
    assert "level=error sub=identity" in log, log
    assert not read_lake(d.lake)


def plugin_broker(certs, tmp_path, things=(FORGED, REAL)):
    db = tmp_path / "registry.db"
    for t in things:
        r = subprocess.run([harness.BUILD / "tidegate", "device", "--db", db, "register", t,
                            "--cert", certs.thing(t)[0]], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    return harness.Broker(certs, tmp_path, extra_args=["--plugin", harness.BUILD / "tidegate_auth.so",
                                                       "--registry", db]).start()


@pytest.mark.parametrize("mode", ["stamped", "topic"])
def test_plugin_broker_forged_property_names_real_thing(certs, daemons, tmp_path, mode):
    b = plugin_broker(certs, tmp_path)
    try:
        d = daemons(b, extra=f"[broker]\nidentity = {mode}\n")
        if mode == "stamped":
            assert "the broker stamps identities" in d.log(), d.log()
        pub_forged(b, certs, REAL, 1)
        pub_forged(b, certs, FORGED, 2, claim=REAL)
        recs = records_by_seq(d, 2)
    finally:
        b.stop()
    assert recs[1]["thing"] == REAL and recs[2]["thing"] == FORGED, recs
    assert "removed a forged tidegate-thing property from client=dev-0002" in b.log()
