"""Integration tests of the tidegate Mosquitto auth plugin and the device registry.

Each broker here is a real Mosquitto 2.0 on a free 127.0.0.1 port, with one mutual-TLS
listener (require_certificate, TLS 1.2) and the built plugin loaded (TIDEGATE_BUILD, default
build/rel). Certificates come from certs/make-certs.sh into a temporary folder; things are
registered with the `tidegate device` CLI (the daemon binary when it dispatches `device`,
otherwise a small driver compiled here from gateway/registry/registry_cli.c). Clients are paho-mqtt
(MQTT v5) and the gateway identity (CN tidegate-gateway) subscribes to '#' to observe what is
delivered. "Not delivered" is never decided by a sleep: after a possibly-denied publish the
same client publishes an allowed sentinel, and since one publisher's QoS 1 messages reach a
subscriber in order, the sentinel's arrival proves the earlier message would have arrived.
Every attempt and its outcome is collected and printed as a table at the end of the module.
Brokers are always stopped (fixture finalizers), and their logs are attached to failures.
"""
import json
import re
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

import harness

try:
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
except ImportError as e:  # a missing dependency must fail loudly, not skip
    raise ImportError("the auth plugin tests need Debian's python3-paho-mqtt (packaging/install-deps.sh)") from e

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("TIDEGATE_BUILD", ROOT / "build" / "rel"))
PLUGIN = BUILD / "tidegate_auth.so"
IDENTITY = "tidegate-thing"
NOT_AUTHORIZED = 135

ROWS = []  # (scenario, identity, action, expected, observed, note)


def record(scenario, identity, action, expected, observed, note=""):
    ROWS.append((scenario, identity, action, str(expected), str(observed), note))
    assert str(observed) == str(expected), f"{scenario}: {identity} {action}: expected {expected}, got {observed}"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout, step=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


# ---- the CLI ---------------------------------------------------------------------------

DRIVER = """#include "registry_cli.h"
int main(int argc, char **argv) { return registry_cli_main(argc - 1, argv + 1); }
"""


def find_cli(tmp):
    daemon = BUILD / "tidegate"
    if daemon.exists():
        r = subprocess.run([str(daemon), "device", "--help"], capture_output=True, text=True)
        if r.returncode == 0 and "register" in r.stdout:
            return [str(daemon)]
    src = Path(tmp) / "cli_driver.c"
    src.write_text(DRIVER)
    exe = Path(tmp) / "tidegate-device"
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "jansson", "sqlite3", "openssl"],
                           capture_output=True, text=True, check=True).stdout.split()
    subprocess.run(["cc", "-std=c11", "-D_GNU_SOURCE", "-I", str(ROOT / "gateway"), "-o", str(exe), str(src),
                    str(ROOT / "gateway/registry/registry_cli.c"), str(ROOT / "gateway/registry/registry.c"),
                    str(ROOT / "gateway/core/err.c")] + flags, check=True)
    return [str(exe)]


class Env:
    def __init__(self, tmp):
        self.tmp = Path(tmp)
        self.pki = self.tmp / "pki"
        subprocess.run([str(ROOT / "certs/make-certs.sh"), str(self.pki), "--things", "9"], check=True,
                       capture_output=True)
        self.cli_cmd = find_cli(tmp)
        self.brokers = []

    def cli(self, db, *args, ok=True):
        env = dict(os.environ, TIDEGATE_CERTS=str(ROOT / "certs"))
        r = subprocess.run(self.cli_cmd + ["device", "--db", str(db)] + [str(a) for a in args],
                           capture_output=True, text=True, env=env)
        if ok and r.returncode != 0:
            raise AssertionError(f"tidegate device {' '.join(map(str, args))}: rc={r.returncode}\n{r.stderr}")
        return r

    def cert(self, name):
        """(cert, key) for a thing name, 'gateway', 'ops', 'other-ca' or 'revoked'."""
        p = self.pki
        if name in ("gateway", "ops", "loadgen"):
            return p / f"{name}.crt", p / f"{name}.key"
        if name == "other-ca":
            return p / "other-ca/dev-0001.crt", p / "other-ca/dev-0001.key"
        return p / "things" / f"{name}.crt", p / "things" / f"{name}.key"

    def broker(self, name, db, opts=None, identity_as_username=False, extra=(), quiet=False):
        b = Broker(self, name, db, opts or {}, identity_as_username, extra, quiet)
        self.brokers.append(b)
        return b


class Broker:
    def __init__(self, env, name, db, opts, identity_as_username, extra=(), quiet=False):
        self.env, self.name, self.db = env, name, Path(db)
        self.port = free_port()
        self.dir = env.tmp / f"broker-{name}"
        self.dir.mkdir()
        self.logpath = self.dir / "mosquitto.log"
        lines = [
            # as root Mosquitto would drop to user mosquitto and fail on the 0600 keys
            "user root" if os.geteuid() == 0 else "",
            "per_listener_settings false",
            "allow_anonymous false",
            "log_dest stderr",
            # quiet (benchmarks): no per-packet debug lines, which cost the broker real time
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information" if quiet else "log_type all",
            f"listener {self.port} 127.0.0.1",
            f"cafile {env.pki / 'ca.crt'}",
            f"certfile {env.pki / 'server.crt'}",
            f"keyfile {env.pki / 'server.key'}",
            "require_certificate true",
            "tls_version tlsv1.2",
            f"use_identity_as_username {'true' if identity_as_username else 'false'}",
            f"plugin {PLUGIN}",
            f"plugin_opt_registry {self.db}",
        ] + [f"plugin_opt_{k} {v}" for k, v in opts.items()] + list(extra)
        (self.dir / "mosquitto.conf").write_text("\n".join(lines) + "\n")
        self.log = open(self.logpath, "w")
        # TIDEGATE_AUTH_VALGRIND=1 runs each broker under memcheck: the plugin .so is not built
        # with sanitizers (the broker is not), so this is how its memory use gets checked.
        wrap = []
        if os.environ.get("TIDEGATE_AUTH_VALGRIND"):
            wrap = ["valgrind", "--error-exitcode=99", "--leak-check=full", "--errors-for-leak-kinds=definite",
                    f"--log-file={self.dir / 'valgrind.log'}"]
        self.proc = subprocess.Popen(wrap + ["mosquitto", "-c", str(self.dir / "mosquitto.conf")],
                                     stdout=self.log, stderr=subprocess.STDOUT)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"mosquitto exited rc={self.proc.returncode}:\n{self.log_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return "tidegate_auth: ready" in self.log_text()
            except OSError:
                return False

        try:
            if not wait_until(ready, 60 if wrap else 10):
                raise AssertionError(f"mosquitto not ready on port {self.port}:\n{self.log_text()}")
        except AssertionError:
            self.stop(check=False)  # mosquitto's own start-up failure path leaks; not ours
            raise

    def log_text(self):
        if not self.log.closed:
            self.log.flush()
        return self.logpath.read_text(errors="replace")

    def alive(self):
        return self.proc.poll() is None

    def stop(self, check=True):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if not self.log.closed:
            self.log.close()
        vg = self.dir / "valgrind.log"
        if check and vg.exists():
            summary = [ln.split("==", 2)[-1].strip() for ln in vg.read_text().splitlines()
                       if "ERROR SUMMARY" in ln or "definitely lost:" in ln]
            ROWS.append(("valgrind", f"broker {self.name}", "memcheck at exit", "exit != 99",
                         f"exit {self.proc.returncode}" if self.proc.returncode == 99 else "exit != 99",
                         "; ".join(summary)))
        if check and vg.exists() and self.proc.returncode == 99:
            shutil.copy(vg, Path(tempfile.gettempdir()) / f"tg-auth-valgrind-{self.name}.log")
            raise AssertionError(f"valgrind found errors in broker {self.name}:\n{vg.read_text()[-6000:]}")


# ---- MQTT clients ----------------------------------------------------------------------

class Peer:
    """One MQTT v5 client with a certificate; callbacks turn into waitable state."""

    def __init__(self, broker, cert_name, client_id):
        self.broker, self.client_id, self.cert_name = broker, client_id, cert_name
        crt, key = broker.env.cert(cert_name)
        # harness.client_class(): a broker cutting the TLS connection mid-write can end paho's
        # network thread with ssl.SSLEOFError and no on_disconnect; that counts as the close
        self.c = harness.client_class()(client_id=client_id, protocol=mqtt.MQTTv5)
        self.c.tls_set(ca_certs=str(broker.env.pki / "ca.crt"), certfile=str(crt), keyfile=str(key),
                       tls_version=ssl.PROTOCOL_TLS_CLIENT)
        self.lock = threading.Condition()
        self.connack = None
        self.closed_at = None
        self.close_rc = None
        self.subacks = {}
        self.messages = []
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = self._on_disconnect
        self.c.on_socket_error = self._on_socket_error
        self.c.on_subscribe = self._on_subscribe
        self.c.on_message = self._on_message
        self.started = False

    def _on_connect(self, c, ud, flags, rc, props=None):
        with self.lock:
            self.connack = rc.value if hasattr(rc, "value") else int(rc)
            self.lock.notify_all()

    def _on_disconnect(self, c, ud, rc, props=None):
        with self.lock:
            if self.closed_at is None:
                self.closed_at = time.monotonic()
                self.close_rc = rc.value if hasattr(rc, "value") else rc
            self.lock.notify_all()
        # paho's network thread would reconnect on its own and take the session over from a
        # later peer with the same client id; a closed peer stays closed
        c.disconnect()

    def _on_socket_error(self, c, exc):
        with self.lock:
            if self.closed_at is None:
                self.closed_at = c.socket_error[0]  # when the thread met the error
                self.close_rc = f"socket error {type(exc).__name__}"
            self.lock.notify_all()

    def _on_subscribe(self, c, ud, mid, rcs, props=None):
        with self.lock:
            self.subacks[mid] = [r.value for r in rcs]
            self.lock.notify_all()

    def _on_message(self, c, ud, msg):
        props = {}
        p = getattr(msg, "properties", None)
        for k, v in (getattr(p, "UserProperty", None) or []):
            props.setdefault(k, []).append(v)
        content_type = getattr(p, "ContentType", None) if p else None
        with self.lock:
            self.messages.append((msg.topic, msg.payload.decode(errors="replace"), props, content_type))
            self.lock.notify_all()

    def connect(self, timeout=5, session_expiry=None):
        """CONNACK reason code (0 = accepted), or 'tls-refused' when TLS did not complete.
        session_expiry (seconds): a persistent session (clean start off), as the daemon's."""
        kw = {}
        if session_expiry is not None:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = session_expiry
            kw = dict(clean_start=False, properties=props)
        try:
            self.c.connect("127.0.0.1", self.broker.port, keepalive=30, **kw)
        except (ssl.SSLError, OSError):
            return "tls-refused"
        # Read the CONNACK in this thread, so a TLS failure surfaces here as an exception
        # rather than in paho's network thread.
        deadline = time.monotonic() + timeout
        try:
            while self.connack is None and self.closed_at is None and time.monotonic() < deadline:
                self.c.loop(0.05)
        except (ssl.SSLError, OSError):
            return "tls-refused"
        if self.connack is None:
            return "tls-refused"
        if self.connack == 0:
            self.c.loop_start()
            self.started = True
        return self.connack

    def subscribe(self, topic, qos=1, timeout=5):
        rc, mid = self.c.subscribe(topic, qos)
        with self.lock:
            if not self.lock.wait_for(lambda: mid in self.subacks, timeout):
                return "no-suback"
            return self.subacks[mid][0]

    def publish(self, topic, payload, props=None, qos=1, timeout=5):
        info = self.c.publish(topic, payload, qos=qos, properties=props)
        info.wait_for_publish(timeout)
        return info.rc

    def wait_message(self, pred, timeout=5):
        with self.lock:
            self.lock.wait_for(lambda: any(pred(m) for m in self.messages), timeout)
            return [m for m in self.messages if pred(m)]

    def close(self):
        try:
            self.c.disconnect()
        except Exception:
            pass
        if self.started:
            self.c.loop_stop()


class Fixture:
    """A broker with a registry, the gateway observer subscribed to '#', and peers to close."""

    def __init__(self, env, name, opts=None, identity_as_username=False, db=None):
        self.env = env
        self.db = db or env.tmp / f"{name}.db"
        if db is None:
            env.cli(self.db, "list")  # creates and migrates the registry
        self.broker = env.broker(name, self.db, opts, identity_as_username)
        self.peers = []
        self.gw = self.peer("gateway", "tidegate-gw")
        assert self.gw.connect() == 0, self.broker.log_text()
        assert self.gw.subscribe("#") in (0, 1)
        self.seq = 0

    def peer(self, cert_name, client_id):
        p = Peer(self.broker, cert_name, client_id)
        self.peers.append(p)
        return p

    def cli(self, *args, ok=True):
        return self.env.cli(self.db, *args, ok=ok)

    def delivered(self, p, topic, sentinel_topic=None, props=None):
        """Publish on topic, then an allowed sentinel; True when the first reached the gateway.
        Without sentinel_topic the gateway publishes the sentinel itself: p's publish has been
        acknowledged (so routed, or dropped) before, so the order still holds."""
        self.seq += 1
        payload = f"{p.client_id}-{self.seq}"
        p.publish(topic, payload, props)
        mark = f"sentinel-{self.seq}"
        if sentinel_topic:
            p.publish(sentinel_topic, mark)
        else:
            sentinel_topic = "devices/gw-sentinel"
            self.gw.publish(sentinel_topic, mark)
        got = self.gw.wait_message(lambda m: m[1] == mark, 5)
        assert got, f"sentinel {sentinel_topic} never arrived\n{self.broker.log_text()[-3000:]}"
        return any(m[0] == topic and m[1] == payload for m in self.gw.messages)

    def close(self):
        for p in self.peers:
            p.close()


def outcome(rc):
    return {0: "accepted", NOT_AUTHORIZED: "refused(135)"}.get(rc, str(rc))


# ---- fixtures --------------------------------------------------------------------------

class _TableReport:
    """Prints the attempts table in pytest's terminal summary, which is never captured."""

    def pytest_terminal_summary(self, terminalreporter):
        tr = terminalreporter
        tr.section("auth plugin: attempts and outcomes")
        tr.write_line(f"{'scenario':<26} {'identity':<34} {'action':<42} {'expected':<16} {'observed':<16} note")
        for r in ROWS:
            tr.write_line(f"{r[0]:<26} {r[1]:<34} {r[2]:<42} {r[3]:<16} {r[4]:<16} {r[5]}" +
                          ("" if r[3] == r[4] else "  <-- MISMATCH"))


@pytest.fixture(scope="module")
def env(request):
    if not PLUGIN.exists():
        pytest.fail(f"{PLUGIN} is missing: build it first (make all)")
    if not request.config.pluginmanager.has_plugin("tidegate-auth-table"):
        request.config.pluginmanager.register(_TableReport(), "tidegate-auth-table")
    tmp = tempfile.mkdtemp(prefix="tg_auth_")
    e = Env(tmp)
    yield e
    errors = []
    for b in e.brokers:  # stop every broker even when one reports a problem
        try:
            b.stop()
        except AssertionError as ex:
            errors.append(str(ex))
    shutil.rmtree(tmp, ignore_errors=True)
    assert not errors, "\n".join(errors)


@pytest.fixture(scope="module")
def main(env):
    f = Fixture(env, "main")
    f.cli("register", "dev-0001", "--cert", env.cert("dev-0001")[0])
    f.cli("register", "dev-0002", "--cert", env.cert("dev-0002")[0], "--inactive")
    f.cli("register", "dev-0003", "--cert", env.cert("dev-0003")[0])
    f.cli("register", "dev-0004", "--cert", env.cert("dev-0004")[0])
    yield f
    f.close()
    assert f.broker.alive(), "the broker died:\n" + f.broker.log_text()[-3000:]


# ---- tests -----------------------------------------------------------------------------

def test_connect_matrix(main, env):
    S = "connect"
    cases = [
        ("dev-0001", "dev-0001", "registered ACTIVE", "accepted"),
        ("dev-0009", "dev-0009", "CA-signed, unregistered", "refused(135)"),
        ("dev-0002", "dev-0002", "registered INACTIVE", "refused(135)"),
        ("dev-0001", "dev-0003", "client-id spoofing", "refused(135)"),
        ("other-ca", "dev-0001", "cert from another CA", "tls-refused"),
        ("ops", "tidegate-ops", "CA-signed, not a thing", "refused(135)"),
        ("gateway", "tidegate-gw-2", "gateway identity", "accepted"),
    ]
    for cert, cid, what, expected in cases:
        p = main.peer(cert, cid)
        record(S, f"cert={cert} id={cid}", what, expected, outcome(p.connect()))
        p.close()
    # activation takes effect on the next connect, without a broker restart
    main.cli("activate", "dev-0002")
    p = main.peer("dev-0002", "dev-0002")
    record(S, "cert=dev-0002 id=dev-0002", "after `device activate`", "accepted", outcome(p.connect()))
    p.close()
    main.cli("deactivate", "dev-0002")
    p = main.peer("dev-0002", "dev-0002")
    record(S, "cert=dev-0002 id=dev-0002", "after `device deactivate`", "refused(135)", outcome(p.connect()))
    p.close()
    # `register --issue` makes the key and certificate with certs/issue-device.sh
    r = main.cli("register", "dev-0010", "--issue", "--pki", env.pki)
    assert "issued by certs/" in r.stdout, r.stdout
    p = main.peer("dev-0010", "dev-0010")
    record(S, "cert=dev-0010 id=dev-0010", "after `device register --issue`", "accepted", outcome(p.connect()))
    p.close()
    log = main.broker.log_text()
    assert 'reason="unregistered certificate (CN=dev-0009)"' in log
    assert 'reason="client id "dev-0003" is not the certificate\'s thing "dev-0001""' in log


def test_publish_is_stamped_and_forgery_replaced(main):
    S = "identity stamping"
    d = main.peer("dev-0001", "dev-0001")
    assert d.connect() == 0
    plain = "plain-%d" % time.monotonic_ns()
    d.publish("devices/dev-0001/telemetry", plain)
    got = main.gw.wait_message(lambda m: m[1] == plain)
    record(S, "dev-0001", "publish devices/dev-0001/telemetry", "delivered", "delivered" if got else "lost")
    record(S, "dev-0001", "  gateway sees tidegate-thing", "['dev-0001']", got[0][2].get(IDENTITY) if got else None)

    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [(IDENTITY, "dev-0003"), ("site", "north"), (IDENTITY, "gateway")]
    props.ContentType = "application/json"
    forged = "forged-%d" % time.monotonic_ns()
    d.publish("devices/dev-0001/telemetry", forged, props)
    got = main.gw.wait_message(lambda m: m[1] == forged)
    assert got, main.broker.log_text()[-2000:]
    topic, payload, uprops, ctype = got[0]
    record(S, "dev-0001", "publish with forged tidegate-thing x2", "['dev-0001']", uprops.get(IDENTITY))
    record(S, "dev-0001", "  other user property kept", "['north']", uprops.get("site"))
    record(S, "dev-0001", "  content type kept", "application/json", ctype)
    assert "removed a forged tidegate-thing property from client=dev-0001" in main.broker.log_text()

    # a service identity's messages carry no thing identity, forged or not
    assert d.subscribe("commands/dev-0001/#") == 1
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [(IDENTITY, "dev-0002"), ("k", "v")]
    main.gw.publish("commands/dev-0001/set", "gw-forged", props)
    got = d.wait_message(lambda m: m[1] == "gw-forged")
    record(S, "gateway", "publish commands/dev-0001/set, forged prop", "None",
           got[0][2].get(IDENTITY) if got else "lost", "dev-0001 receives it")
    d.close()


def test_cross_device_publish_and_subscribe_denied(main):
    S = "cross-device"
    d = main.peer("dev-0001", "dev-0001")
    assert d.connect() == 0
    ok = "devices/dev-0001/telemetry"
    for topic, expected in [("devices/dev-0003/telemetry", "not delivered"),
                            ("devices/dev-0001/telemetry", "delivered"),
                            ("commands/dev-0001/reboot", "not delivered"),
                            ("alerts/x", "not delivered")]:
        got = main.delivered(d, topic, ok)
        record(S, "dev-0001", f"publish {topic}", expected, "delivered" if got else "not delivered")
    for filt, expected in [("commands/dev-0003/#", NOT_AUTHORIZED), ("#", NOT_AUTHORIZED),
                           ("devices/dev-0003/#", NOT_AUTHORIZED), ("commands/+/reboot", NOT_AUTHORIZED),
                           ("$SYS/#", NOT_AUTHORIZED), ("commands/dev-0001/#", 1),
                           ("$share/g/commands/dev-0001/x", 1)]:
        record(S, "dev-0001", f"subscribe {filt}", expected, d.subscribe(filt))
    # receive: the gateway commands dev-0001
    main.gw.publish("commands/dev-0001/reboot", "now")
    got = d.wait_message(lambda m: m[0] == "commands/dev-0001/reboot")
    record(S, "dev-0001", "receive commands/dev-0001/reboot", "delivered", "delivered" if got else "lost")
    d.close()


def test_revoked_mid_session_stops_within_1s(main, env):
    S = "revoke mid-session"
    d = main.peer("dev-0003", "dev-0003")
    assert d.connect() == 0
    stop = threading.Event()
    sent = []

    def pump():
        n = 0
        while not stop.is_set() and d.closed_at is None:
            n += 1
            payload = json.dumps({"n": n, "t": time.monotonic()})
            d.c.publish("devices/dev-0003/telemetry", payload, qos=0)
            sent.append(n)
            time.sleep(0.01)

    t = threading.Thread(target=pump)
    t.start()
    assert main.gw.wait_message(lambda m: m[0] == "devices/dev-0003/telemetry", 5)
    t0 = time.monotonic()  # measured from the CLI's start: it also runs certs/revoke.sh
    r = main.cli("revoke", "dev-0003", "--pki", env.pki)
    closed = wait_until(lambda: d.closed_at is not None, 3)
    stop.set()
    t.join()
    dt = d.closed_at - t0 if closed else None
    record(S, "dev-0003", "disconnected after `device revoke`", "< 1.0 s",
           "< 1.0 s" if dt is not None and dt < 1.0 else f"{dt}", f"measured {dt * 1000:.0f} ms" if dt else "")
    late = [json.loads(m[1]) for m in main.gw.messages if m[0] == "devices/dev-0003/telemetry"]
    late = [m for m in late if m["t"] > t0 + 1.0]
    record(S, "dev-0003", "messages accepted > 1 s after revoke", "0", len(late))
    assert "revoked in the CRL" in r.stdout, r.stdout + r.stderr
    crl = subprocess.run(["openssl", "crl", "-in", str(env.pki / "crl.pem"), "-noout", "-text"],
                         capture_output=True, text=True).stdout
    serial = subprocess.run(["openssl", "x509", "-in", str(env.cert("dev-0003")[0]), "-noout", "-serial"],
                            capture_output=True, text=True).stdout.strip().split("=")[1]
    record(S, "dev-0003", "serial listed in crl.pem", "yes", "yes" if serial in crl else "no")
    p = main.peer("dev-0003", "dev-0003")
    record(S, "dev-0003", "reconnect after revoke", "refused(135)", outcome(p.connect()))
    record(S, "dev-0003", "`device activate` a revoked cert", "rc=1", f"rc={main.cli('activate', 'dev-0003', '--cert', env.cert('dev-0003')[0], ok=False).returncode}")
    print(f"revoke -> disconnect: {dt:.3f} s" if dt is not None else "not disconnected")

    # deactivate works the same way and is reversible
    d4 = main.peer("dev-0004", "dev-0004")
    assert d4.connect() == 0
    main.cli("deactivate", "dev-0004")
    t0 = time.monotonic()
    closed = wait_until(lambda: d4.closed_at is not None, 3)
    dt = d4.closed_at - t0 if closed else None
    record(S, "dev-0004", "disconnected after `device deactivate`", "< 1.0 s",
           "< 1.0 s" if dt is not None and dt < 1.0 else f"{dt}", f"measured {dt * 1000:.0f} ms" if dt else "")
    main.cli("activate", "dev-0004")
    p = main.peer("dev-0004", "dev-0004")
    record(S, "dev-0004", "reconnect after `device activate`", "accepted", outcome(p.connect()))


POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": "iot:Publish", "Resource": [
            "topic/cid/${iot:ClientId}/#",
            "topic/thing/${iot:Connection.Thing.ThingName}/#",
            "topic/site/${iot:Connection.Thing.Attributes[site]}/#",
            "topic/cn/${iot:Certificate.Subject.CommonName}/#"]},
        {"Effect": "Deny", "Action": "iot:Publish", "Resource": "topic/thing/${iot:Connection.Thing.ThingName}/secret"},
        {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": "topicfilter/inbox/#"},
        {"Effect": "Allow", "Action": "iot:Receive", "Resource": "topic/inbox/${iot:Connection.Thing.ThingName}/#"},
    ],
}


def test_policy_variables_one_by_one(env):
    S = "policy variables"
    pol = env.tmp / "policy.json"
    pol.write_text(json.dumps(POLICY))
    f = Fixture(env, "policy", {"policy_file": pol})
    try:
        # thing pump-7 holds the certificate whose CN is dev-0005: ClientId/ThingName = pump-7,
        # CommonName = dev-0005, so each variable is told apart from the others
        f.cli("register", "pump-7", "--cert", env.cert("dev-0005")[0], "--attr", "site=north")
        d = f.peer("dev-0005", "pump-7")
        record(S, "cert CN=dev-0005 id=pump-7", "connect", "accepted", outcome(d.connect()))
        sentinel = "thing/pump-7/sentinel"
        cases = [
            ("${iot:ClientId}", "cid/pump-7/x", True), ("${iot:ClientId}", "cid/dev-0005/x", False),
            ("${...ThingName}", "thing/pump-7/x", True), ("${...ThingName}", "thing/dev-0005/x", False),
            ("Deny ${...ThingName}/secret", "thing/pump-7/secret", False),
            ("${...Attributes[site]}", "site/north/x", True), ("${...Attributes[site]}", "site/south/x", False),
            ("${...CommonName}", "cn/dev-0005/x", True), ("${...CommonName}", "cn/pump-7/x", False),
        ]
        for var, topic, allowed in cases:
            got = f.delivered(d, topic, sentinel)
            record(S, f"pump-7 {var}", f"publish {topic}", "delivered" if allowed else "not delivered",
                   "delivered" if got else "not delivered")
        record(S, "pump-7", "subscribe inbox/#", 1, d.subscribe("inbox/#"))
        f.gw.publish("inbox/other/m", "not-for-you")
        f.gw.publish("inbox/pump-7/m", "for-you")
        got = d.wait_message(lambda m: m[1] == "for-you")
        record(S, "pump-7 Receive ${...ThingName}", "receive inbox/pump-7/m", "delivered", "delivered" if got else "lost")
        record(S, "pump-7 Receive ${...ThingName}", "receive inbox/other/m", "not delivered",
               "delivered" if any(m[1] == "not-for-you" for m in d.messages) else "not delivered")

        # an attribute change applies to the connected thing within a second
        f.cli("set-attr", "pump-7", "site=south")
        t0 = time.monotonic()
        ok = wait_until(lambda: f.delivered(d, "site/south/y", sentinel), 2, step=0.02)
        dt = time.monotonic() - t0
        record(S, "pump-7 site=north->south", "publish site/south/y within 1 s", "delivered",
               "delivered" if ok and dt < 1.0 else f"after {dt:.2f}s" if ok else "not delivered",
               f"measured {dt * 1000:.0f} ms")
        got = f.delivered(d, "site/north/y", sentinel)
        record(S, "pump-7 site=south", "publish site/north/y", "not delivered", "delivered" if got else "not delivered")
        # a removed attribute resolves to nothing: the Allow grants nothing
        f.cli("set-attr", "pump-7", "site=")
        wait_until(lambda: not f.delivered(d, "site/south/z", sentinel), 2, step=0.02)
        got = f.delivered(d, "site/south/z2", sentinel)
        record(S, "pump-7 no site attribute", "publish site/south/z2", "not delivered",
               "delivered" if got else "not delivered")
    finally:
        f.close()


def test_jit_registration(env):
    S = "JITR"
    f = Fixture(env, "jitr-inactive", {"jitr": "inactive"})
    try:
        d = f.peer("dev-0006", "dev-0006")
        record(S + " inactive", "cert=dev-0006 (unregistered)", "connect", "refused(135)", outcome(d.connect()))
        show = json.loads(f.cli("--json", "show", "dev-0006").stdout)
        c = show["certificates"][0]
        record(S + " inactive", "dev-0006", "registry after refusal", "INACTIVE/jitr", f"{c['status']}/{c['source']}")
        f.cli("activate", "dev-0006")
        d2 = f.peer("dev-0006", "dev-0006")
        record(S + " inactive", "cert=dev-0006", "connect after activate", "accepted", outcome(d2.connect()))
    finally:
        f.close()
    f = Fixture(env, "jitr-active", {"jitr": "active"})
    try:
        d = f.peer("dev-0007", "dev-0007")
        record(S + " active", "cert=dev-0007 (unregistered)", "connect", "accepted", outcome(d.connect()))
        got = f.delivered(d, "devices/dev-0007/t", "devices/dev-0007/t")
        record(S + " active", "dev-0007", "publish devices/dev-0007/t", "delivered", "delivered" if got else "not delivered")
        show = json.loads(f.cli("--json", "show", "dev-0007").stdout)
        c = show["certificates"][0]
        record(S + " active", "dev-0007", "registry", "ACTIVE/jitr", f"{c['status']}/{c['source']}")
        o = f.peer("ops", "tidegate-ops")  # JITR names the thing after the CN: must match client id
        record(S + " active", "cert=ops id=tidegate-ops", "connect (thing tidegate-ops)", "accepted", outcome(o.connect()))
        o2 = f.peer("dev-0008", "someone-else")
        record(S + " active", "cert=dev-0008 id=someone-else", "connect", "refused(135)", outcome(o2.connect()))
    finally:
        f.close()


def test_registry_missing_then_back_then_gone(env):
    S = "registry unavailable"
    db = env.tmp / "late.db"
    f = Fixture(env, "nodb", db=db)
    try:
        d = f.peer("dev-0001", "dev-0001")
        record(S, "cert=dev-0001", "connect, registry file missing", "refused(135)", outcome(d.connect()))
        assert "registry unavailable, denying things" in f.broker.log_text()
        record(S, "gateway", "gateway still connected", "True", f.gw.closed_at is None)
        env.cli(db, "register", "dev-0001", "--cert", env.cert("dev-0001")[0])
        d2 = f.peer("dev-0001", "dev-0001")
        record(S, "cert=dev-0001", "connect once the registry exists", "accepted", outcome(d2.connect()))
        record(S, "dev-0001", "publish", "delivered",
               "delivered" if f.delivered(d2, "devices/dev-0001/a", "devices/dev-0001/a") else "not delivered")
        # the database disappears under a connected thing: its publishes stop within a second
        for suffix in ("", "-wal", "-shm"):
            Path(str(db) + suffix).unlink(missing_ok=True)
        t0 = time.monotonic()
        seq = [0]

        def denied():
            seq[0] += 1
            mark = f"gone-{seq[0]}"
            d2.publish("devices/dev-0001/b", mark)
            # the gateway's own publish is the sentinel here (the thing has no allowed topic left)
            f.gw.publish("devices/gw-sentinel", mark)
            f.gw.wait_message(lambda m: m[0] == "devices/gw-sentinel" and m[1] == mark, 2)
            return not any(m[1] == mark and m[0] == "devices/dev-0001/b" for m in f.gw.messages)

        ok = wait_until(denied, 2, step=0.02)
        dt = time.monotonic() - t0
        record(S, "dev-0001", "publish after registry deleted", "denied < 1 s",
               "denied < 1 s" if ok and dt < 1.0 else f"{'denied' if ok else 'allowed'} after {dt:.2f}s",
               f"measured {dt * 1000:.0f} ms")
        record(S, "broker", "still running", "True", f.broker.alive())
    finally:
        f.close()


def test_identity_as_username_listener_still_enforced(env):
    """With use_identity_as_username Mosquitto skips BASIC_AUTH; the plugin must catch the
    client at its first ACL check and kick it."""
    S = "use_identity_as_username"
    f = Fixture(env, "idasuser", identity_as_username=True)
    try:
        f.cli("register", "dev-0001", "--cert", env.cert("dev-0001")[0])
        good = f.peer("dev-0001", "dev-0001")
        record(S, "cert=dev-0001", "connect", "accepted", outcome(good.connect()))
        record(S, "dev-0001", "publish devices/dev-0001/t", "delivered",
               "delivered" if f.delivered(good, "devices/dev-0001/t", "devices/dev-0001/t") else "not delivered")
        bad = f.peer("dev-0009", "dev-0009")
        rc = bad.connect()  # CONNACK 0: the broker did not ask the plugin
        bad.publish("devices/dev-0009/t", "intruder")
        kicked = wait_until(lambda: bad.closed_at is not None, 2)
        record(S, "cert=dev-0009 (unregistered)", f"connect (CONNACK {rc}), publish", "kicked", "kicked" if kicked else "still connected")
        assert f.delivered(good, "devices/dev-0001/t2", "devices/dev-0001/t2")
        record(S, "dev-0009", "its publish delivered", "False", any(m[1] == "intruder" for m in f.gw.messages))
    finally:
        f.close()


def test_bad_plugin_options_refuse_to_start(env):
    """A policy error is a configuration error: the broker must not start with it."""
    bad = env.tmp / "bad-policy.json"
    bad.write_text('{"Statement":[{"Effect":"Allow","Action":"iot:Publish","Resource":"devices/*"}]}')
    with pytest.raises(AssertionError) as e:
        env.broker("badpolicy", env.tmp / "x.db", {"policy_file": bad})
    record("config errors", "policy with '*'", "broker start", "refused", "refused")
    assert "'*' is not supported" in str(e.value)
    with pytest.raises(AssertionError) as e:
        env.broker("badopt", env.tmp / "x.db", {"no_such_option": "1"})
    assert "unknown option plugin_opt_no_such_option" in str(e.value)
    record("config errors", "plugin_opt_no_such_option", "broker start", "refused", "refused")
    with pytest.raises(AssertionError) as e:
        env.broker("badslice", env.tmp / "x.db", {"revalidate_slice_ms": "0"})
    assert "revalidate_slice_ms must be 1..1000" in str(e.value)
    record("config errors", "plugin_opt_revalidate_slice_ms 0", "broker start", "refused", "refused")


def test_service_identity_has_its_own_policy(env):
    S = "service identity"
    pol = env.tmp / "ops-policy.json"
    pol.write_text(json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["iot:Subscribe", "iot:Receive"], "Resource": "topicfilter/devices/#"}]}))
    f = Fixture(env, "services", {"identity_tidegate-ops": pol})
    try:
        f.cli("register", "dev-0001", "--cert", env.cert("dev-0001")[0])
        ops = f.peer("ops", "ops-console")
        record(S, "cert CN=tidegate-ops id=ops-console", "connect (no registry entry)", "accepted", outcome(ops.connect()))
        record(S, "tidegate-ops", "subscribe devices/#", 1, ops.subscribe("devices/#"))
        record(S, "tidegate-ops", "subscribe commands/#", NOT_AUTHORIZED, ops.subscribe("commands/#"))
        got = f.delivered(ops, "devices/dev-0001/x")
        d = f.peer("dev-0001", "dev-0001")
        assert d.connect() == 0
        d.publish("devices/dev-0001/t", "seen-by-ops")
        seen = ops.wait_message(lambda m: m[1] == "seen-by-ops")
        record(S, "tidegate-ops", "receive devices/dev-0001/t", "['dev-0001']",
               seen[0][2].get(IDENTITY) if seen else "lost", "stamped thing identity")
        record(S, "tidegate-ops", "publish devices/dev-0001/x", "not delivered", "delivered" if got else "not delivered")
    finally:
        f.close()


def test_recheck_runs_in_slices_and_finds_the_changed_thing(env):
    """After a registry change the plugin re-checks every connected thing a slice per broker
    tick (revalidate_batch 1 here: one thing a slice): the deactivated one is disconnected,
    the others stay connected and keep publishing, and the pass reports itself."""
    S = "re-check in slices"
    f = Fixture(env, "slices", {"revalidate_batch": 1, "revalidate_slice_ms": 1})
    try:
        names = [f"dev-000{i}" for i in range(1, 8)]
        peers = {}
        for n in names:
            f.cli("register", n, "--cert", env.cert(n)[0])
        for n in names:
            peers[n] = f.peer(n, n)
            assert peers[n].connect() == 0, f.broker.log_text()[-2000:]
        time.sleep(0.5)  # a pass the registrations started ends (7 slices, a tick each)
        before = len(f.broker.log_text())
        f.cli("deactivate", "dev-0005")
        closed = wait_until(lambda: peers["dev-0005"].closed_at is not None, 5)
        record(S, "dev-0005 (7 connected)", "disconnected after `device deactivate`", "yes", "yes" if closed else "no")
        # SQLite's checkpoint when the CLI closes can move data_version once more, which starts
        # the pass again: the pass that completes may be that second one, over the 6 left
        pat = r"re-checked ([67]) connected things, disconnected [01]; [0-9.]+ ms of work in ([0-9]+) slices"
        m = wait_until(lambda: re.search(pat, f.broker.log_text()[before:]), 5)
        log = f.broker.log_text()[before:]
        assert m, log[-3000:]
        assert 'disconnecting client=dev-0005 thing=dev-0005 reason="certificate is now INACTIVE"' in log, log[-3000:]
        things, slices = int(m.group(1)), int(m.group(2))
        record(S, "plugin", f"slices for {things} things at one a slice", f">= {things}",
               f">= {things}" if slices >= things else slices)
        assert slices >= things, log[-3000:]
        still = [n for n in names if n != "dev-0005" and peers[n].closed_at is None]
        record(S, "the other 6", "still connected", 6, len(still))
        got = sum(f.delivered(peers[n], f"devices/{n}/telemetry") for n in still)
        record(S, "the other 6", "publishes delivered", 6, got)
        assert len(still) == 6 and got == 6
    finally:
        f.close()


def test_registry_locked_denies_then_recovers(env):
    """A WAL reader is blocked only by an exclusive lock taken before it opens the file, so
    the registry is replaced (as a restore would) by a copy another process holds locked:
    the plugin notices the new file, cannot read it, denies things, and recovers when the
    lock goes."""
    S = "registry locked"
    import sqlite3
    f = Fixture(env, "locked")
    try:
        f.cli("register", "dev-0001", "--cert", env.cert("dev-0001")[0])
        d = f.peer("dev-0001", "dev-0001")
        assert d.connect() == 0
        alt = env.tmp / "locked-next.db"
        env.cli(alt, "register", "dev-0001", "--cert", env.cert("dev-0001")[0])
        w = sqlite3.connect(str(alt), isolation_level=None)
        w.execute("PRAGMA journal_mode=DELETE")
        w.execute("BEGIN EXCLUSIVE")
        w.execute("UPDATE thing SET updated_ms = updated_ms + 1")
        os.replace(alt, f.db)
        for suffix in ("-wal", "-shm"):
            Path(str(f.db) + suffix).unlink(missing_ok=True)
        t0 = time.monotonic()
        ok = wait_until(lambda: not f.delivered(d, "devices/dev-0001/l"), 2, step=0.02)
        dt = time.monotonic() - t0
        record(S, "dev-0001 (connected)", "publish while locked", "denied < 1 s",
               "denied < 1 s" if ok and dt < 1.0 else f"after {dt:.2f}s", f"measured {dt * 1000:.0f} ms")
        p = f.peer("dev-0001", "dev-0001")
        record(S, "cert=dev-0001", "connect while locked", "refused(135)", outcome(p.connect()))
        record(S, "broker", "log names the lock", "True", "database is locked" in f.broker.log_text())
        w.execute("COMMIT")
        w.close()
        p2 = f.peer("dev-0001", "dev-0001")
        t0 = time.monotonic()
        rc = p2.connect()
        record(S, "cert=dev-0001", "connect after unlock", "accepted", outcome(rc))
        ok = wait_until(lambda: f.delivered(p2, "devices/dev-0001/m"), 3, step=0.05)
        dt = time.monotonic() - t0
        record(S, "dev-0001", "publish after unlock", "delivered",
               "delivered" if ok else "not delivered", f"after {dt * 1000:.0f} ms")
        record(S, "broker", "still running", "True", f.broker.alive())
    finally:
        f.close()


def test_gateway_offline_session_keeps_what_devices_publish(env):
    """The gateway's persistent session goes on receiving while its connection is down (a
    daemon restart or kill -9): every delivery to the offline session is an ACL check on a
    context without a certificate, which the plugin used to refuse, so the broker answered
    the devices 'no matching subscribers' and dropped their messages. Now the session keeps
    the identity it was made with and gets them all when the daemon reconnects."""
    S = "gateway offline: its session keeps the devices' messages"
    f = Fixture(env, "offline")
    try:
        f.cli("register", "dev-0001", "--cert", env.cert("dev-0001")[0])
        gw = f.peer("gateway", "tidegate-gw-session")
        assert gw.connect(session_expiry=3600) == 0, f.broker.log_text()[-2000:]
        assert gw.subscribe("devices/+/telemetry") in (0, 1)
        gw.close()
        wait_until(lambda: gw.closed_at is not None, 5)
        d = f.peer("dev-0001", "dev-0001")
        assert d.connect() == 0
        sent = [f"offline-{i}" for i in range(20)]
        for m in sent:
            d.publish("devices/dev-0001/telemetry", m)
        back = f.peer("gateway", "tidegate-gw-session")
        assert back.connect(session_expiry=3600) == 0
        got = back.wait_message(lambda m: m[1] == sent[-1], 10)
        have = {m[1] for m in back.messages if m[0] == "devices/dev-0001/telemetry"}
        record(S, "dev-0001 -> offline gateway session", "20 publishes, gateway reconnects", "20 delivered",
               f"{len(have & set(sent))} delivered")
        assert got and have >= set(sent), (sorted(have), f.broker.log_text()[-3000:])
        # a second takeover of the session leaves one entry, not one per connection
        back.close()
        again = f.peer("gateway", "tidegate-gw-session")
        assert again.connect(session_expiry=3600) == 0
        d.publish("devices/dev-0001/telemetry", "after-second-takeover")
        assert again.wait_message(lambda m: m[1] == "after-second-takeover", 10)
        assert "refused first access client=tidegate-gw-session" not in f.broker.log_text()
    finally:
        f.close()
        assert f.broker.alive(), "the broker died:\n" + f.broker.log_text()[-3000:]


def test_policy_reload_on_sighup(env):
    """SIGHUP re-reads the policy files and re-resolves every connected client; a broken file
    keeps the running policy (and says so in the log)."""
    import signal
    S = "policy reload (SIGHUP)"

    def doc(prefix):
        return json.dumps({"Statement": [
            {"Effect": "Allow", "Action": "iot:Publish", "Resource": f"{prefix}/${{iot:Connection.Thing.ThingName}}/#"},
            {"Effect": "Allow", "Action": "iot:Publish", "Resource": "s/${iot:Connection.Thing.ThingName}"}]})

    pol = env.tmp / "reload-policy.json"
    pol.write_text(doc("a"))
    f = Fixture(env, "reload", {"policy_file": pol})
    try:
        f.cli("register", "dev-0001", "--cert", env.cert("dev-0001")[0])
        d = f.peer("dev-0001", "dev-0001")
        assert d.connect() == 0
        record(S, "dev-0001", "publish b/dev-0001/x before", "not delivered",
               "delivered" if f.delivered(d, "b/dev-0001/x", "s/dev-0001") else "not delivered")
        pol.write_text(doc("b"))
        f.broker.proc.send_signal(signal.SIGHUP)
        ok = wait_until(lambda: f.delivered(d, "b/dev-0001/y", "s/dev-0001"), 3, step=0.05)
        record(S, "dev-0001", "publish b/dev-0001/y after SIGHUP", "delivered", "delivered" if ok else "not delivered")
        record(S, "dev-0001, gateway", "still connected after SIGHUP", "True",
               d.closed_at is None and f.gw.closed_at is None, "2.0.11 drops clients without a username")
        record(S, "dev-0001", "publish a/dev-0001/y after SIGHUP", "not delivered",
               "delivered" if f.delivered(d, "a/dev-0001/y", "s/dev-0001") else "not delivered")
        pol.write_text("{ not json")
        f.broker.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "thing policy: " in f.broker.log_text(), 3)
        record(S, "broker", "bad policy on SIGHUP logged", "True", "thing policy: " in f.broker.log_text())
        record(S, "dev-0001", "publish b/dev-0001/z (old policy kept)", "delivered",
               "delivered" if f.delivered(d, "b/dev-0001/z", "s/dev-0001") else "not delivered")
        record(S, "broker", "still running", "True", f.broker.alive())
    finally:
        f.close()
