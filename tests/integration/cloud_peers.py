"""Upstream peers for the message sinks (issue 17), shared by the integration tests and the
benchmark: a second Mosquitto playing "the cloud" (AWS IoT Core's stand-in: its own CA,
mutual TLS only, TLS >= 1.2, an ACL in the shape of an IoT policy), a counting MQTT v5
subscriber on it, and `nats-server -js` with a minimal NATS client that creates streams and
reads them back.

Everything listens on 127.0.0.1 on a free port, waits for readiness with a deadline and is
always stopped (context managers, and `stop()` is idempotent). What arrived is read with
clients of our own here (paho, the NATS wire protocol), never with tidegate's code.
"""
import json
import os
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import harness
from harness import Proc, free_port, port_open, wait_until

# ---- the cloud broker -----------------------------------------------------------------------


class CloudBroker(harness.Broker):
    """Mosquitto as a cloud MQTT broker: mTLS with its own CA (certs from certs/make-certs.sh
    run into a separate folder), the certificate CN as username, an ACL that lets the gateway
    identity publish under `publish_prefix`/# only (like an IoT policy) and the ops identity
    read everything. Persistence on, so a subscriber's session and its queue survive a stop
    with SIGTERM and a start (the outage test). Started, stopped and logged like the site
    broker (harness.Broker); only its configuration differs."""

    def __init__(self, certs, workdir, publish_prefix="tidegate", gateway_cn="tidegate-gateway"):
        super().__init__(certs, Path(workdir) / "cloud")  # runs in <workdir>/cloud/broker
        (self.dir / "persist").mkdir(exist_ok=True)
        (self.dir / "acl").write_text(
            f"user {gateway_cn}\ntopic write {publish_prefix}/#\n"
            f"user tidegate-loadgen\ntopic write {publish_prefix}/#\n"
            "user tidegate-ops\ntopic read #\n")
        user = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text(f"""# the cloud broker of the tidegate bridge tests
user {user}
per_listener_settings false
allow_anonymous false
acl_file {self.dir / 'acl'}
listener {self.port} 127.0.0.1
cafile {certs.ca}
certfile {certs.dir / 'server.crt'}
keyfile {certs.dir / 'server.key'}
tls_version tlsv1.2
require_certificate true
use_identity_as_username true
persistence true
persistence_location {self.dir / 'persist'}/
autosave_interval 3600
max_queued_messages 1000000
max_inflight_messages 1000
max_keepalive 1200
log_dest file {self.dir / 'mosquitto.log'}
log_type error
log_type warning
log_type notice
connection_messages true
log_timestamp true
""")

    def render(self):
        return self.conf

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


_RESILIENT = None


def _resilient_client_class():
    """harness.client_class() whose network thread outlives a broker that cuts a TLS record
    short. paho 1.6 (Debian 12) lets that ssl.SSLEOFError out of loop_forever (it catches
    only ConnectionError around its reads), which ended the thread for good: the cloud
    subscriber of test_cloud_outage_30s_under_load then saw nothing after the cloud broker's
    restart. Here the thread reconnects, as paho does after any other loss."""
    global _RESILIENT
    if _RESILIENT is None:
        base = harness.client_class()

        class Client(base):
            def _thread_main(self):
                while True:
                    try:
                        self.loop_forever(retry_first_connection=True)
                        return
                    except OSError as e:
                        self.socket_error = (time.monotonic(), e)
                        if self._thread_terminate:
                            return
                        time.sleep(1)
                        try:
                            self.reconnect()
                        except OSError:
                            pass

        _RESILIENT = Client
    return _RESILIENT


class CloudSubscriber:
    """A paho MQTT v5 subscriber on the cloud broker (ops identity, QoS 1) with a persistent
    session, so it misses nothing across a broker restart. Keeps every message: topic, the
    parsed payload, the user properties, the content type and the DUP flag (set when the
    broker redelivers to this subscriber, e.g. after its own restart)."""

    def __init__(self, broker, topic="tidegate/#", client_id="cloud-counter"):
        import paho.mqtt.client as mqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
        self.msgs = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.topic = topic
        c = _resilient_client_class()(client_id=client_id, protocol=mqtt.MQTTv5)
        c.tls_set(ca_certs=str(broker.certs.ca), certfile=str(broker.certs.dir / "ops.crt"),
                  keyfile=str(broker.certs.dir / "ops.key"), tls_version=ssl.PROTOCOL_TLS_CLIENT)
        c.reconnect_delay_set(min_delay=1, max_delay=1)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.on_subscribe = lambda *a: self.subscribed.set()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client = c
        c.connect("127.0.0.1", broker.port, keepalive=30, clean_start=False, properties=props)
        c.loop_start()
        if not self.subscribed.wait(10):
            c.loop_stop()
            raise TimeoutError("cloud subscriber did not subscribe")

    def _on_connect(self, c, ud, flags, rc, props=None):
        if rc == 0 and not flags.get("session present"):
            c.subscribe(self.topic, qos=1)
        elif rc == 0:
            self.subscribed.set()

    def _on_message(self, c, ud, m):
        props = dict(getattr(m.properties, "UserProperty", []) or [])
        ctype = getattr(m.properties, "ContentType", None)
        with self.lock:
            self.msgs.append((m.topic, m.payload, props, ctype, bool(m.dup)))

    def count(self):
        with self.lock:
            return len(self.msgs)

    def records(self, with_dup=False):
        """[(topic, payload dict, user properties, content type[, dup])]"""
        with self.lock:
            got = list(self.msgs)
        if with_dup:
            return [(t, json.loads(p), props, ct, dup) for t, p, props, ct, dup in got]
        return [(t, json.loads(p), props, ct) for t, p, props, ct, _ in got]

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


# ---- NATS -----------------------------------------------------------------------------------


class NatsServer:
    """nats-server with JetStream (file storage in the test dir) on a free loopback port.
    start() returns once the JetStream API answers; kill9() for crash tests."""

    def __init__(self, workdir, name="nats", port=None):
        self.dir = Path(workdir) / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc = None

    @property
    def url(self):
        return f"nats://127.0.0.1:{self.port}"

    def start(self):
        self.proc = Proc(["nats-server", "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", self.dir / "js",
                          "-n", f"tg-test-{self.port}"], self.dir / "nats-server.log")
        wait_until(lambda: port_open(self.port) or not self.proc.alive(), 10, what="nats-server port")
        assert self.proc.alive(), self.log()

        def js_ready():
            try:
                with NatsClient(self.port) as c:
                    return "error" not in c.request("$JS.API.INFO", b"", timeout=1)
            except (OSError, TimeoutError, ValueError):
                return False
        wait_until(js_ready, 15, interval=0.1, what="JetStream ready")
        return self

    def stop(self):
        if self.proc:
            self.proc.stop()

    def kill9(self):
        if self.proc:
            self.proc.kill9()

    def log(self):
        p = self.dir / "nats-server.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def client(self):
        return NatsClient(self.port)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class NatsClient:
    """Just enough of the NATS protocol for tests: CONNECT, SUB, PUB with a reply inbox,
    MSG/HMSG parsing, PING/PONG; and JetStream's JSON API over request/reply."""

    def __init__(self, port, timeout=15.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.held = []  # messages for other subscriptions that arrived while request() waited
        self.sid = 0
        self.inbox_n = 0
        line = self._line(time.monotonic() + timeout)
        if not line.startswith(b"INFO "):
            raise ValueError(f"not a NATS server: {line[:80]!r}")
        self.info = json.loads(line[5:])
        self._send(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"no_responders":true,'
                   b'"protocol":1,"name":"tidegate-test"}\r\nPING\r\n')
        while True:
            kind, _ = self._next(timeout)
            if kind == "PONG":
                break

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _send(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("NATS read timed out")
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(1 << 16)
        except socket.timeout:
            raise TimeoutError("NATS read timed out")
        if not chunk:
            raise OSError("NATS connection closed")
        self.buf += chunk

    def _line(self, deadline=None):
        deadline = deadline or time.monotonic() + 5
        while b"\r\n" not in self.buf:
            self._fill(deadline)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _bytes(self, n, deadline):
        while len(self.buf) < n + 2:
            self._fill(deadline)
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _next(self, timeout):
        """One protocol message: ("MSG", dict) or ("PING"/"PONG"/"OK", None); -ERR raises.
        Messages request() held back come first."""
        if self.held:
            return "MSG", self.held.pop(0)
        deadline = time.monotonic() + timeout
        while True:
            line = self._line(deadline)
            if line == b"PING":
                self._send(b"PONG\r\n")
                continue
            if line == b"PONG":
                return "PONG", None
            if line.startswith(b"+OK"):
                continue
            if line.startswith(b"-ERR"):
                raise OSError(line.decode(errors="replace"))
            if line.startswith(b"MSG ") or line.startswith(b"HMSG "):
                f = line.decode().split()
                hdr = line.startswith(b"HMSG ")
                if hdr:
                    subj, sid, rest = f[1], f[2], f[3:]
                    reply = rest[0] if len(rest) == 3 else None
                    hlen, total = int(rest[-2]), int(rest[-1])
                else:
                    subj, sid, rest = f[1], f[2], f[3:]
                    reply = rest[0] if len(rest) == 2 else None
                    hlen, total = 0, int(rest[-1])
                raw = self._bytes(total, deadline)
                headers = {}
                if hlen:
                    for h in raw[:hlen].decode(errors="replace").split("\r\n")[1:]:
                        if ":" in h:
                            k, v = h.split(":", 1)
                            headers[k.strip()] = v.strip()
                return "MSG", dict(subject=subj, sid=sid, reply=reply, headers=headers, data=raw[hlen:])
            if line.startswith(b"INFO "):
                continue
            raise ValueError(f"unexpected NATS line {line[:80]!r}")

    def subscribe(self, subject):
        self.sid += 1
        self._send(f"SUB {subject} {self.sid}\r\n".encode())
        return str(self.sid)

    def publish(self, subject, data, reply=None, headers=None):
        if headers:
            h = "NATS/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
            hb = h.encode()
            self._send(f"HPUB {subject} {reply + ' ' if reply else ''}{len(hb)} {len(hb) + len(data)}\r\n".encode()
                       + hb + data + b"\r\n")
        else:
            self._send(f"PUB {subject} {reply + ' ' if reply else ''}{len(data)}\r\n".encode() + data + b"\r\n")

    def request(self, subject, data, timeout=30.0):
        """JetStream API call: JSON in, parsed JSON out. The deadline is generous: on a
        shared 2-core box a busy server (storing a burst) can take seconds to answer."""
        self.inbox_n += 1
        inbox = f"_INBOX.tgtest.{os.getpid()}.{self.inbox_n}"
        sid = self.subscribe(inbox)
        body = data if isinstance(data, bytes) else json.dumps(data).encode()
        self.publish(subject, body, reply=inbox)
        deadline = time.monotonic() + timeout
        held = []
        try:
            while True:
                kind, m = self._next(max(0.01, deadline - time.monotonic()))
                if kind == "MSG" and m["sid"] == sid:
                    if m["headers"] and not m["data"]:
                        raise ValueError(f"{subject}: no responders")
                    return json.loads(m["data"])
                if kind == "MSG":  # e.g. a push consumer delivering before its CREATE answer
                    held.append(m)
        finally:
            self.held = held + self.held
            self._send(f"UNSUB {sid}\r\n".encode())

    # ---- JetStream ----

    def stream_create(self, name, subjects, duplicate_window_s=120, max_msg_size=None, storage="file"):
        cfg = {"name": name, "subjects": subjects, "storage": storage, "num_replicas": 1,
               "duplicate_window": int(duplicate_window_s * 1e9), "retention": "limits", "discard": "old"}
        if max_msg_size:
            cfg["max_msg_size"] = max_msg_size
        r = self.request(f"$JS.API.STREAM.CREATE.{name}", cfg)
        if "error" in r:
            raise RuntimeError(f"stream create {name}: {r['error']}")
        return r

    def stream_info(self, name):
        r = self.request(f"$JS.API.STREAM.INFO.{name}", b"")
        if "error" in r:
            raise RuntimeError(f"stream info {name}: {r['error']}")
        return r

    def stream_count(self, name):
        return self.stream_info(name)["state"]["messages"]

    def stream_messages(self, name, timeout=60):
        """Every message of the stream, oldest first: dicts with subject, seq, headers, data.
        Read with an ephemeral push consumer (no acks) delivering to an inbox of ours."""
        want = self.stream_count(name)
        self.inbox_n += 1
        inbox = f"_INBOX.tgtest.read.{os.getpid()}.{self.inbox_n}"
        sid = self.subscribe(inbox)
        r = self.request(f"$JS.API.CONSUMER.CREATE.{name}", {
            "stream_name": name, "config": {"deliver_subject": inbox, "ack_policy": "none",
                                            "deliver_policy": "all", "replay_policy": "instant"}})
        if "error" in r:
            raise RuntimeError(f"consumer create on {name}: {r['error']}")
        out = []
        deadline = time.monotonic() + timeout
        try:
            while len(out) < want:
                kind, m = self._next(max(0.01, deadline - time.monotonic()))
                if kind == "MSG" and m["sid"] == sid:
                    # reply: $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
                    m["seq"] = int(m["reply"].split(".")[5]) if m["reply"] else None
                    out.append(m)
        finally:
            self._send(f"UNSUB {sid}\r\n".encode())
            try:
                self.request(f"$JS.API.CONSUMER.DELETE.{name}.{r['name']}", b"")
            except (OSError, TimeoutError, ValueError):
                pass
        return out


def load_20k(broker, daemon, workdir, sink, what):
    """The issue's normal case: device_sim publishes 20,000 messages (5 things x 4,000, max
    rate, QoS 1); waits until the sink delivered 20,000 and their rows are deleted. Returns
    (seconds from the load's start to the last delivery, the daemon's metrics then)."""
    t0 = time.monotonic()
    summary = harness.Sim.run(broker, workdir, "--things", 5, "--count", 4000, "--max-rate", "--qos", 1, "--seed", 3)
    assert summary["acked"] >= 20000 and summary["failed"] == 0, summary
    ok = f'tidegate_sink_records_total{{sink="{sink}",outcome="ok"}}'
    wait_until(lambda: daemon.metric(ok, 0) >= 20000, 120, interval=0.2, what=f"20000 {what}")
    t1 = time.monotonic()
    wait_until(lambda: daemon.metric("tidegate_outbox_rows") == 0, 10, what="delivered rows deleted")
    return t1 - t0, daemon.metrics()


def outage_under_load(broker, daemon, workdir, sink, peer, what):
    """The 30 s outage of an upstream peer under load, as the issue defines it: device_sim at
    200 msg/s for 45 s; once the sink delivers, the peer is stopped for 30 s (records must
    pile up in the outbox and the sink be down), started again, and the load finished.
    Returns (messages sent, rows queued at the end of the outage)."""
    sim, summary_path = harness.Sim.start(broker, workdir, "--things", 5, "--rate", 40, "--duration", 45,
                                          "--qos", 1, "--seed", 5)
    ok = f'tidegate_sink_records_total{{sink="{sink}",outcome="ok"}}'
    wait_until(lambda: daemon.metric(ok, 0) > 500, 30, what=f"flowing to {what}")
    peer.stop()
    t0 = time.monotonic()
    wait_until(lambda: time.monotonic() - t0 >= 30, 40, interval=1, what="30 s outage")
    queued = daemon.metric("tidegate_outbox_rows")
    assert queued > 1000, f"records should pile up in the outbox while {what} is down"
    assert daemon.metric(f'tidegate_sink_up{{sink="{sink}",type="{daemon_sink_type(daemon, sink)}"}}') == 0
    peer.start()
    assert sim.wait(120) == 0, sim.text()
    return json.loads(summary_path.read_text())["sent"], queued


def daemon_sink_type(daemon, sink):
    status, body = daemon.http("/healthz")
    return [s for s in json.loads(body)["sinks"] if s["name"] == sink][0]["type"]
