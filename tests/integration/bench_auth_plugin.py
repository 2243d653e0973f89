#!/usr/bin/python3
"""bench_auth_plugin.py — what the auth plugin costs the broker.

Runs the same mutual-TLS Mosquitto listener twice on 127.0.0.1: once with the tidegate
plugin (registry lookup at connect, policy on every publish and delivery, identity stamping)
and once with Mosquitto's own ACL file keyed on the certificate CN (use_identity_as_username),
which is what the box used before the plugin. In each, one device publishes N QoS 1 messages
with `mosquitto_pub -l` (C, up to 20 in flight) and the gateway counts them with
`mosquitto_sub -C N`; the figure is N / elapsed from the first publish to the last receipt.
Each configuration runs ROUNDS times, interleaved; the median is printed.

Usage: nice /usr/bin/python3 tests/integration/bench_auth_plugin.py [N<65535] [ROUNDS]
(TIDEGATE_BUILD selects the build, default build/rel.) Not a test: prints figures only.
"""
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_auth_plugin as t  # noqa: E402  (reuses its broker and certificate helpers)


def run_round(env, broker, n):
    pki = env.pki
    common = ["-h", "127.0.0.1", "-p", str(broker.port), "--cafile", str(pki / "ca.crt"), "-V", "mqttv5", "-q", "1"]
    sub = subprocess.Popen(["mosquitto_sub"] + common + ["--cert", str(pki / "gateway.crt"), "--key",
                           str(pki / "gateway.key"), "-i", "bench-gw", "-t", "devices/#", "-C", str(n)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.3)  # the subscription must exist before the first publish
    lines = "".join(f'{{"seq":{i},"temperature":21.5,"humidity":40.1}}\n' for i in range(n)).encode()
    t0 = time.monotonic()
    pub = subprocess.run(["mosquitto_pub"] + common + ["--cert", str(pki / "things/dev-0001.crt"), "--key",
                         str(pki / "things/dev-0001.key"), "-i", "dev-0001", "-t", "devices/dev-0001/telemetry", "-l"],
                         input=lines, capture_output=True)
    try:
        sub.wait(60)
    except subprocess.TimeoutExpired:
        sub.kill()
        raise SystemExit(f"subscriber did not get {n} messages; publisher rc={pub.returncode} {pub.stderr!r}")
    dt = time.monotonic() - t0
    if pub.returncode or sub.returncode:
        raise SystemExit(f"pub rc={pub.returncode} sub rc={sub.returncode}: {pub.stderr!r} {sub.stderr.read()!r}")
    return n / dt


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    if not 0 < n < 65535:
        # checked: past 65535 QoS 1 messages on one `mosquitto_pub -l` connection (message
        # ids wrap) Mosquitto 2.0.11 drops the publisher "due to out of memory", plugin or not
        raise SystemExit("N must be 1..65534")
    with tempfile.TemporaryDirectory(prefix="tg_auth_bench_") as tmp:
        env = t.Env(tmp)
        db = env.tmp / "bench.db"
        env.cli(db, "register", "dev-0001", "--cert", env.cert("dev-0001")[0])
        results = {}
        brokers = []
        try:
            # unbounded queues: the default 1000-message cap would drop QoS 1 under load
            plugin = env.broker("bench-plugin", db, extra=["max_queued_messages 0"], quiet=True)
            brokers.append(plugin)
            # Build the ACL broker by hand: same listener, no plugin.
            port = t.free_port()
            d = env.tmp / "broker-bench-acl"
            d.mkdir()
            acl = d / "acl"
            acl.write_text("user tidegate-gateway\ntopic read devices/#\n"
                           "pattern write devices/%u/#\npattern read commands/%u/#\n")
            conf = d / "mosquitto.conf"
            conf.write_text("\n".join([
                "user root" if os.geteuid() == 0 else "", "per_listener_settings false", "allow_anonymous false",
                "log_dest stderr", "log_type error", "log_type warning", "log_type notice", "log_type information",
                f"acl_file {acl}", f"listener {port} 127.0.0.1", f"cafile {env.pki / 'ca.crt'}",
                f"certfile {env.pki / 'server.crt'}", f"keyfile {env.pki / 'server.key'}",
                "require_certificate true", "tls_version tlsv1.2", "use_identity_as_username true",
                "max_queued_messages 0"]) + "\n")
            log = open(d / "mosquitto.log", "w")
            proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
            t.wait_until(lambda: _port_open(port), 10)

            acl_broker = type("AclBroker", (), {"port": port})()
            try:
                # interleaved, so load from other processes on the box hits both alike
                for _ in range(rounds):
                    for name, b in (("acl_file (no plugin)", acl_broker), ("tidegate_auth plugin", plugin)):
                        results.setdefault(name, []).append(run_round(env, b, n))
            finally:
                proc.terminate()
                proc.wait(10)
                log.close()
        finally:
            for b in brokers:
                b.stop()
        print(f"auth plugin bench: {n} QoS 1 messages, 1 publisher -> broker (mTLS) -> 1 subscriber, {rounds} rounds")
        for name, rates in results.items():
            print(f"  {name:<22} median {statistics.median(rates):8.0f} msg/s   rounds: "
                  + ", ".join(f"{r:.0f}" for r in rates))
        a, p = (statistics.median(v) for v in results.values())
        print(f"  plugin / acl_file = {p / a:.3f}")


def _port_open(port):
    import socket
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


if __name__ == "__main__":
    main()
