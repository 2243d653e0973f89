"""Issue 13 — the Mosquitto drop-in the package puts in /etc/mosquitto/conf.d/.

Taken from the built package itself. Inert as shipped: a broker that includes it behaves
as without it. Enabled by the one step its header documents (the same sed command, read
from the file): a mutual-TLS listener with the package's ACL, which the tidegate daemon
and a device use end to end. The only test-specific changes are the paths the operator's
certificates would be at, and a free port instead of 8883.
"""
import re
import shlex
import subprocess
from pathlib import Path

import harness
from conftest import deb_path
from harness import Proc, free_port, port_open, read_lake, wait_until


def _extract(tmp_path, host_arch):
    root = tmp_path / "pkg"
    subprocess.run(["dpkg-deb", "-x", str(deb_path(host_arch)), str(root)], check=True)
    return root


def _broker(tmp_path, main_conf, name):
    conf = tmp_path / f"{name}.conf"
    conf.write_text(main_conf)
    return Proc(["mosquitto", "-c", conf], tmp_path / f"{name}.log")


def _pub_plain(port, topic="t/x", msg="hello"):
    return subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-m", msg, "-q", "1"],
                          capture_output=True, text=True, timeout=20)


def test_dropin_inert_as_shipped(tmp_path, host_arch):
    root = _extract(tmp_path, host_arch)
    dropin = root / "etc/mosquitto/conf.d/tidegate.conf"
    settings = [line for line in dropin.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert settings == [], f"active settings in the shipped drop-in: {settings}"
    port = free_port()
    b = _broker(tmp_path, f"include_dir {dropin.parent}\nlistener {port} 127.0.0.1\nallow_anonymous true\n", "inert")
    try:
        wait_until(lambda: port_open(port) or not b.alive(), 10, what="mosquitto with the inert drop-in")
        assert b.alive(), b.text()
        r = _pub_plain(port)
        assert r.returncode == 0, r.stderr  # anonymous plain MQTT still works: nothing was added
    finally:
        b.stop()


def test_dropin_enabled_by_the_documented_step(certs, tmp_path, host_arch):
    root = _extract(tmp_path, host_arch)
    dropin = root / "etc/mosquitto/conf.d/tidegate.conf"
    text = dropin.read_text()
    # the step, as the file documents it
    m = re.search(r"^#.*?sudo (sed -i '[^']+') /etc/mosquitto/conf.d/tidegate.conf$", text, re.M)
    assert m, "the enabling command is not in the header"
    subprocess.run([*shlex.split(m.group(1)), str(dropin)], check=True)
    enabled = dropin.read_text()
    assert "\nlistener 8883\n" in enabled and "\nrequire_certificate true\n" in enabled
    # where this test keeps what the operator would put in /etc/tidegate/certs
    c = certs.dir
    port = free_port()
    enabled = (enabled.replace("/etc/tidegate/certs/", f"{c}/")
               .replace("/etc/tidegate/mosquitto.acl", str(root / "etc/tidegate/mosquitto.acl"))
               .replace("listener 8883", f"listener {port} 127.0.0.1"))
    dropin.write_text(enabled)
    # Debian's mosquitto.conf includes conf.d; the keys here are root's 0600 files
    b = _broker(tmp_path, f"user root\ninclude_dir {dropin.parent}\n", "enabled")
    daemon = None
    try:
        wait_until(lambda: port_open(port) or not b.alive(), 10, what="mosquitto with the enabled drop-in")
        assert b.alive(), b.text()
        assert _pub_plain(port).returncode != 0, "a client without a certificate got in"
        broker = type("B", (), {"port": port, "certs": certs})()
        daemon = harness.Daemon(broker, tmp_path).start()
        # a device publishes under its own name: it reaches the lake through the daemon
        ok = harness.mosquitto_pub(broker, *certs.thing("dev-0003"), "devices/dev-0003/telemetry",
                                   ['{"sensor_id":"dev-0003","ts":1,"temperature":20.5}'])
        assert ok.returncode == 0, ok.stderr
        # the ACL: dev-0003 cannot speak for dev-0004 (the broker drops it)
        harness.mosquitto_pub(broker, *certs.thing("dev-0003"), "devices/dev-0004/telemetry",
                              ['{"sensor_id":"dev-0004","ts":2,"temperature":99}'])
        wait_until(lambda: len(read_lake(daemon.lake)) >= 1, 15, what="the device's record in the lake")
        # one more from the right device after the spoof, so the spoof had its chance to arrive
        harness.mosquitto_pub(broker, *certs.thing("dev-0004"), "devices/dev-0004/telemetry",
                              ['{"sensor_id":"dev-0004","ts":3,"temperature":19}'])
        wait_until(lambda: len(read_lake(daemon.lake)) >= 2, 15, what="dev-0004's own record")
        assert daemon.stop() == 0
        recs = sorted((r["thing"], r["ts"]) for r in read_lake(daemon.lake))
        assert recs == [("dev-0003", 1), ("dev-0004", 3)], recs
    finally:
        if daemon:
            daemon.stop()
        b.stop()
    Path(dropin).unlink()
