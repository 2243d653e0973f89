"""Integration-test harness: real servers on 127.0.0.1, free ports, always stopped.

Every server runs in the test's temp dir with its log captured there; readiness is awaited
with a deadline (never a bare sleep); `stop()` is idempotent and also runs from fixtures'
finalisers, so a failing test still leaves nothing running.
"""
import gzip
import json
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("TIDEGATE_BUILD", REPO / "build" / "rel"))
SANITIZED = os.environ.get("TIDEGATE_SANITIZED") == "1"
# A cross-built daemon runs through a launcher ("qemu-aarch64-static -L /"); the load
# (device_sim) can stay the host's own build.
EXEC_WRAPPER = os.environ.get("TIDEGATE_EXEC_WRAPPER", "").split()
SIM_BUILD = Path(os.environ.get("TIDEGATE_SIM_BUILD", BUILD))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout=10.0, interval=0.02, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Proc:
    """A child process with a log file, stopped for sure."""

    def __init__(self, argv, log_path, env=None, cwd=None):
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_path)
        self.log = open(self.log_path, "ab")
        self.p = subprocess.Popen(self.argv, stdout=self.log, stderr=subprocess.STDOUT,
                                  env=env, cwd=cwd, start_new_session=True)

    def alive(self):
        return self.p.poll() is None

    def send_signal(self, sig):
        if self.alive():
            self.p.send_signal(sig)

    def wait(self, timeout=30):
        return self.p.wait(timeout=timeout)

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.alive():
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()
        return self.p.returncode

    def kill9(self):
        if self.alive():
            self.p.kill()
            self.p.wait()
        self.log.close()

    def text(self):
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")


class Certs:
    def __init__(self, out, things=5):
        self.dir = Path(out)
        subprocess.run([REPO / "certs" / "make-certs.sh", self.dir, "--things", str(things)],
                       check=True, capture_output=True)

    def thing(self, name):
        return self.dir / "things" / f"{name}.crt", self.dir / "things" / f"{name}.key"

    @property
    def ca(self):
        return self.dir / "ca.crt"


class Broker:
    """mosquitto with the product's mTLS config rendered for a free port."""

    def __init__(self, certs, workdir, extra_args=()):
        self.certs = certs
        self.dir = Path(workdir) / "broker"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.extra_args = list(extra_args)
        self.proc = None

    def render(self):
        r = subprocess.run([REPO / "certs" / "render-broker-conf.sh", "--certs", self.certs.dir,
                            "--port", str(self.port), "--dir", self.dir, "--log", self.dir / "mosquitto.log",
                            *self.extra_args], check=True, capture_output=True, text=True)
        return r.stdout.strip().splitlines()[-1]

    def start(self):
        conf = self.render()
        self.proc = Proc(["mosquitto", "-c", conf], self.dir / "mosquitto.stdout")
        wait_until(lambda: port_open(self.port) or not self.proc.alive(), 10, what="mosquitto port")
        assert self.proc.alive(), self.log()
        return self

    def stop(self):
        if self.proc:
            self.proc.stop()

    def log(self):
        p = self.dir / "mosquitto.log"
        return p.read_text(errors="replace") if p.exists() else ""


DEFAULT_SINKS = """
[sink lake]
type = file
path = {lake}
"""


class Daemon:
    """The tidegate daemon with a config written into the test dir."""

    def __init__(self, broker, workdir, extra="", sinks=None, top="", name="tidegate", exe=None, wrapper=None):
        self.broker = broker
        # another build of the daemon (a cross-built one) and its launcher (qemu-user)
        self.exe = Path(exe) if exe else BUILD / "tidegate"
        self.wrapper = list(wrapper) if wrapper is not None else EXEC_WRAPPER
        self.dir = Path(workdir) / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.lake = self.dir / "lake"
        self.http_port = free_port()
        self.conf = self.dir / "tidegate.conf"
        certs = broker.certs
        sinks = (sinks if sinks is not None else DEFAULT_SINKS).format(lake=self.lake)
        # a key given twice is an error: `top` may set its own log_level
        level = "" if "log_level" in top else "log_level = info"
        self.conf.write_text(f"""# written by the integration harness
gateway_id = gw-test
data_dir = {self.dir / 'data'}
{level}
{top}
[broker]
host = 127.0.0.1
port = {broker.port}
ca_file = {certs.ca}
cert_file = {certs.dir / 'gateway.crt'}
key_file = {certs.dir / 'gateway.key'}
[http]
port = {self.http_port}
{extra}
{sinks}
""")
        self.proc = None
        self.token = None  # the console's bearer token, sent with every request when set

    def start(self, wait_connected=True, env=None):
        env = {**os.environ, **(env or {})}
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:exitcode=99")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1:exitcode=98")
        argv = [*self.wrapper, self.exe, "run", "-c", self.conf]
        if os.environ.get("TIDEGATE_VALGRIND") == "1":
            argv = ["valgrind", "--quiet", "--leak-check=full", "--errors-for-leak-kinds=definite",
                    "--error-exitcode=97", *argv]
        self.proc = Proc(argv, self.dir / "tidegate.log", env=env)
        if wait_connected:
            wait_until(lambda: self.metric("tidegate_broker_connected") == 1 or not self.proc.alive(), 20,
                       what="tidegate connected")
            assert self.proc.alive(), self.proc.text()
        return self

    def stop(self, sig=signal.SIGTERM):
        rc = self.proc.stop(sig) if self.proc else 0
        return rc

    def kill9(self):
        self.proc.kill9()

    def http(self, path):
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            return None, ""

    def metrics(self):
        status, body = self.http("/metrics")
        out = {}
        if status != 200:
            return out
        for line in body.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
        return out

    def metric(self, name, default=None):
        return self.metrics().get(name, default)

    def log(self):
        return self.proc.text() if self.proc else ""


def read_lake(lake, table="telemetry"):
    """Every record of one table of a Hive-layout lake (finished and in-progress files)."""
    root = Path(lake) / table
    out = []
    if not root.exists():
        return out
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        data = p.read_bytes()
        if p.name.endswith(".gz") or p.name.endswith(".gz.inprogress"):
            data = gzip.decompress(data)
        lines = data.decode(errors="replace").splitlines()
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except ValueError:
                # only the tail of a file still being written (or cut by a crash) may be partial
                if not (p.name.endswith(".inprogress") and i == len(lines) - 1):
                    raise
    return out


def outbox_msg_ids(db_path, gateway_id="gw-test"):
    """msg_ids of the records still queued in an outbox database (read-only). The stored
    line has no msg_id: it is <gateway_id>-<id>, put in when a sink receives the record."""
    import sqlite3
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT id FROM outbox").fetchall()
    finally:
        con.close()
    return {f"{gateway_id}-{r[0]}" for r in rows}


def lake_files(lake, table="telemetry"):
    root = Path(lake) / table
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


class Sim:
    """Runs device_sim to completion and returns its summary."""

    @staticmethod
    def run(broker, workdir, *args, timeout=300, name="sim"):
        summary = Path(workdir) / f"{name}-summary.json"
        argv = [SIM_BUILD / "device_sim", "--host", "127.0.0.1", "--port", str(broker.port),
                "--cafile", broker.certs.ca, "--certs-dir", broker.certs.dir / "things",
                "--summary-json", summary, *[str(a) for a in args]]
        r = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout)
        assert r.returncode == 0, f"device_sim failed rc={r.returncode}\n{r.stdout}\n{r.stderr}"
        return json.loads(summary.read_text())

    @staticmethod
    def start(broker, workdir, *args, name="sim"):
        summary = Path(workdir) / f"{name}-summary.json"
        argv = [SIM_BUILD / "device_sim", "--host", "127.0.0.1", "--port", str(broker.port),
                "--cafile", broker.certs.ca, "--certs-dir", broker.certs.dir / "things",
                "--summary-json", summary, *[str(a) for a in args]]
        return Proc(argv, Path(workdir) / f"{name}.log"), summary


_CLIENT_CLASS = None


def client_class():
    """paho's Client, with a network thread whose death is seen.

    paho 1.6 (Debian 12) catches only ConnectionError around its socket calls: an
    ssl.SSLEOFError (a broker cutting a TLS connection mid-write) ends loop_start()'s thread
    with a traceback and no on_disconnect, so a test waiting for the disconnect waits in
    vain. Here any OSError that ends the thread is the disconnect: `socket_error` gets
    (time.monotonic(), exception) and `on_socket_error(client, exc)` runs, from that thread.
    """
    global _CLIENT_CLASS
    if _CLIENT_CLASS is None:
        import paho.mqtt.client as mqtt

        class Client(mqtt.Client):
            def __init__(self, *a, **kw):
                super().__init__(*a, **kw)
                self.socket_error = None
                self.on_socket_error = None

            def _thread_main(self):
                try:
                    super()._thread_main()
                except OSError as e:
                    self.socket_error = (time.monotonic(), e)
                    cb = self.on_socket_error
                    if cb:
                        cb(self, e)

        _CLIENT_CLASS = Client
    return _CLIENT_CLASS


def mqtt_client(broker, cert, key, client_id, version5=True, ca=None):
    """A paho client (client_class()) with mTLS to the test broker; the caller connects,
    starts the loop and disconnects."""
    import paho.mqtt.client as mqtt
    c = client_class()(client_id=client_id, protocol=mqtt.MQTTv5 if version5 else mqtt.MQTTv311)
    c.tls_set(ca_certs=str(ca or broker.certs.ca), certfile=str(cert), keyfile=str(key),
              tls_version=ssl.PROTOCOL_TLS_CLIENT)
    return c


class Collector:
    """A paho MQTT v5 subscriber (ops identity by default) collecting what it receives.

    snapshot() gives (topic, payload as JSON) pairs; messages() gives dicts with the topic,
    raw payload, QoS and the MQTT v5 properties (content_type, user_properties as a list
    of pairs, response_topic, correlation_data, payload_format, message_expiry). Both fail
    the test at once when the subscriber's connection died, rather than letting it wait
    for messages that cannot come."""

    def __init__(self, broker, topic, cert=None, key=None, qos=1):
        self.msgs = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.c = mqtt_client(broker, cert or broker.certs.dir / "ops.crt", key or broker.certs.dir / "ops.key",
                             f"ops-{time.monotonic_ns()}")
        topics = [topic] if isinstance(topic, str) else list(topic)
        self.c.on_connect = lambda c, u, f, rc, p=None: c.subscribe([(t, qos) for t in topics])
        self.c.on_subscribe = lambda *a: self.ready.set()
        self.c.on_message = self._on_message
        self.c.connect("127.0.0.1", broker.port)
        self.c.loop_start()
        assert self.ready.wait(10), "subscriber did not get SUBACK"

    def _on_message(self, c, u, m):
        p = getattr(m, "properties", None)
        rec = {"topic": m.topic, "payload": m.payload, "qos": m.qos,
               "content_type": getattr(p, "ContentType", None),
               "user_properties": list(getattr(p, "UserProperty", None) or []),
               "response_topic": getattr(p, "ResponseTopic", None),
               "correlation_data": getattr(p, "CorrelationData", None),
               "payload_format": getattr(p, "PayloadFormatIndicator", None),
               "message_expiry": getattr(p, "MessageExpiryInterval", None)}
        with self.lock:
            self.msgs.append(rec)

    def _check(self):
        if self.c.socket_error:
            raise AssertionError(f"the subscriber's connection died: {self.c.socket_error[1]!r}")

    def messages(self):
        self._check()
        with self.lock:
            return list(self.msgs)

    def snapshot(self):
        return [(m["topic"], json.loads(m["payload"])) for m in self.messages()]

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def mosquitto_pub(broker, cert, key, topic, messages, qos=1, client_id=None, check=False):
    """Publish each message with the mosquitto_pub CLI (reading lines from stdin)."""
    argv = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "--cafile", str(broker.certs.ca),
            "--cert", str(cert), "--key", str(key), "-q", str(qos), "-t", topic, "-l", "-V", "mqttv5"]
    if client_id:
        argv += ["-i", client_id]
    data = "".join(m + "\n" for m in messages)
    return subprocess.run(argv, input=data, capture_output=True, text=True, check=check, timeout=60)


def rss_mb(pid):
    """Resident set size of a process in MiB (VmRSS), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


class Sampler:
    """Samples, on a thread, every `interval` seconds: the RSS of named processes, the size
    of named files and chosen /metrics values of a daemon. `samples` is a list of dicts with
    `t` (seconds since start); `stop()` ends it and returns them. Used where a test or a
    benchmark must see what grows over time, not only what a run ends with."""

    def __init__(self, interval=1.0, pids=None, files=None, daemon=None, metrics=()):
        import threading
        self.interval = interval
        self.pids = dict(pids or {})
        self.files = dict(files or {})
        self.daemon = daemon
        self.metric_names = list(metrics)
        self.samples = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self.t0 = None

    def _one(self):
        s = {"t": time.monotonic() - self.t0}
        for name, pid in self.pids.items():
            s[name] = rss_mb(pid)
        for name, path in self.files.items():
            try:
                s[name] = Path(path).stat().st_size
            except OSError:
                s[name] = 0
        if self.daemon is not None and self.metric_names:
            m = self.daemon.metrics()
            for k in self.metric_names:
                s[k] = m.get(k)
        return s

    def _run(self):
        while not self._stop.is_set():
            self.samples.append(self._one())
            self._stop.wait(self.interval)

    def start(self):
        self.t0 = time.monotonic()
        self._t.start()
        return self

    def stop(self):
        self._stop.set()
        self._t.join(timeout=10)
        self.samples.append(self._one())
        return self.samples

    def series(self, key, after=0.0):
        return [s[key] for s in self.samples if s["t"] >= after and s.get(key) is not None]
def parse_logfmt(line):
    """One logfmt record -> list of (key, value or None), by go-logfmt's rules: bare keys,
    key=value with an unquoted value (no blank, '=', '"' or control character) or a quoted
    one with \\" \\\\ \\n \\r \\t \\uXXXX escapes. Raises ValueError naming the offset."""
    out, i, n = [], 0, len(line)
    esc = {'"': '"', "\\": "\\", "n": "\n", "r": "\r", "t": "\t"}
    while True:
        while i < n and line[i] == " ":
            i += 1
        if i >= n:
            return out
        k = i
        while i < n and line[i] > " " and line[i] not in '="':
            i += 1
        if i == k:
            raise ValueError(f"offset {i}: expected a key in {line!r}")
        key = line[k:i]
        if i >= n or line[i] == " ":
            out.append((key, None))
            continue
        if line[i] != "=":
            raise ValueError(f"offset {i}: unexpected {line[i]!r} in {line!r}")
        i += 1
        if i < n and line[i] == '"':
            i += 1
            val = []
            while True:
                if i >= n:
                    raise ValueError(f"unterminated quoted value in {line!r}")
                c = line[i]
                if c == '"':
                    i += 1
                    break
                if c < " ":
                    raise ValueError(f"offset {i}: raw control character in {line!r}")
                if c == "\\":
                    i += 1
                    if i < n and line[i] in esc:
                        val.append(esc[line[i]])
                        i += 1
                    elif i < n and line[i] == "u":
                        val.append(chr(int(line[i + 1:i + 5], 16)))
                        i += 5
                    else:
                        raise ValueError(f"offset {i}: bad escape in {line!r}")
                    continue
                val.append(c)
                i += 1
            value = "".join(val)
        else:
            v = i
            while i < n and line[i] != " ":
                if line[i] in '="' or line[i] < " ":
                    raise ValueError(f"offset {i}: {line[i]!r} in an unquoted value in {line!r}")
                i += 1
            value = line[v:i]
        if i < n and line[i] != " ":
            raise ValueError(f"offset {i}: no blank after a value in {line!r}")
        out.append((key, value))


def daemon_log_records(text):
    """Every line of a daemon log parsed as logfmt (ValueError on the first line that is not);
    returns a list of dicts (a bare key maps to None)."""
    return [dict(parse_logfmt(line)) for line in text.splitlines() if line.strip()]


def installed_paths(text, certs, root):
    """A config written for an installed box (/etc/tidegate, /var/lib/tidegate) made checkable
    here: certificates from the test PKI, rules and schemas from the repository (what the
    packaging installs there), state under root."""
    return (text.replace("/etc/tidegate/certs/ca.crt", str(certs.ca))
            .replace("/etc/tidegate/certs/gateway.crt", str(certs.dir / "gateway.crt"))
            .replace("/etc/tidegate/certs/gateway.key", str(certs.dir / "gateway.key"))
            .replace("/etc/tidegate/rules", str(REPO / "rules"))
            .replace("/var/lib/tidegate", str(root)))
