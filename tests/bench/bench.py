#!/usr/bin/python3
"""tidegate benchmark driver (run through tests/bench/run.sh, i.e. `make bench[-quick]`).

One run measures, side by side on the same machine and the same broker configuration
(mTLS, QoS 1, ~150-byte device_sim telemetry, 127.0.0.1 only, free ports):
  ceiling   device_sim (load mode, max rate) -> mosquitto -> bench_sub (counts only)
  tidegate  same load -> mosquitto -> tidegate (ingest, rules if any, outbox) -> file sink;
            far end = the sink's ok counter on /metrics; CPU s per 1M from /proc, RSS
  latency   tidegate at 50 % of the measured ceiling: device ts -> ingest (lake
            received_at), device ts -> alert republish (bench_sub on alerts/#)
  node-red  Node-RED 4.x (tests/bench/node-red, pinned) with the equivalent flow
  backlog   N records in the outbox (bench_outbox, the real outbox code), RSS while they
            sit with the sink down, then drain rate and RSS with the sink up
  upstream  a backlog drained to five sinks at once (lake, kinesalite, s3rver, a cloud
            mosquitto over the MQTT bridge, nats-server JetStream); then the MQTT and NATS
            sinks alone, and their brokers' own ceilings, for the ratio
  micro     outbox appends/s (bench_outbox) and every other build/rel/bench_* program
Each figure is repeated (3x, BENCH_QUICK=1: 1x, smaller counts) and the median reported.
Every child runs in its own session and is stopped (TERM, then KILL) on any exit path.
Rates are "messages / (last message at the far end - load start)", on CLOCK_MONOTONIC,
which every process on the host shares; the same definition for every contender.
"""
import atexit
import datetime
import glob
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
B = os.environ.get("B", "build")
BIN = (REPO / B / "rel").resolve()
CERTS = REPO / "certs" / "out"
NR_DIR = REPO / "tests" / "bench" / "node-red"
QUICK = os.environ.get("BENCH_QUICK") == "1"
# a quick run never overwrites the figures of the last full run
OUT = REPO / "bench" / "results" / ("quick" if QUICK else "")
KEEP = os.environ.get("BENCH_KEEP") == "1"
# BENCH_ONLY=ceiling,tidegate,... runs a subset (for debugging the harness; results then
# have empty columns).
ONLY = set(filter(None, os.environ.get("BENCH_ONLY", "").split(",")))


def wanted(name):
    return not ONLY or name in ONLY

P = dict(
    reps=1 if QUICK else 3,
    msgs=int(os.environ.get("BENCH_MSGS", 40000 if QUICK else 200000)),  # per load run (ceiling, tidegate)
    things=100,
    conns=4,
    lat_seconds=6 if QUICK else 15,         # latency run at 50 % of the ceiling
    nr_seconds=15 if QUICK else 45,         # Node-RED measuring window (bounded)
    nr_msgs=40000 if QUICK else 200000,
    backlog=100000 if QUICK else 1000000,
    sit_seconds=3 if QUICK else 8,          # RSS while the backlog sits, sink down
    append_records=100000 if QUICK else 300000,
    upstream_backlog=20000 if QUICK else 100000,  # to lake + kinesalite + s3rver together
    run_timeout=60 if QUICK else 180,       # bound on any one measured phase
)

PROCS = []


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_until(pred, timeout, what, interval=0.02):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Proc:
    """A child in its own session with its output in a log file; always stopped."""

    def __init__(self, argv, log_path, cwd=None, env=None):
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_path)
        self.logf = open(self.log_path, "ab")
        self.p = subprocess.Popen(self.argv, stdout=self.logf, stderr=subprocess.STDOUT, cwd=cwd,
                                  env=env, start_new_session=True)
        self.pid = self.p.pid
        PROCS.append(self)

    def alive(self):
        return self.p.poll() is None

    def wait(self, timeout):
        return self.p.wait(timeout=timeout)

    def wait_cpu(self, timeout):
        """wait for exit; returns the child's user+system CPU seconds (from wait4)"""
        deadline = time.monotonic() + timeout
        while True:
            pid, status, ru = os.wait4(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.p.returncode = os.waitstatus_to_exitcode(status)
                return ru.ru_utime + ru.ru_stime
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.argv[0]} did not exit within {timeout}s")
            time.sleep(0.01)

    def stop(self, timeout=15):
        if self.alive():
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.p.wait()
        if not self.logf.closed:
            self.logf.close()
        if self in PROCS:
            PROCS.remove(self)
        return self.p.returncode


def stop_all():
    for pr in list(reversed(PROCS)):
        pr.stop(timeout=5)


atexit.register(stop_all)


def _on_signal(sig, frame):
    stop_all()
    sys.exit(128 + sig)


signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGINT, _on_signal)
signal.signal(signal.SIGHUP, _on_signal)


# ---- /proc ------------------------------------------------------------------------------
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """utime + stime of pid (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def mem_kib(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[k] = int(v.split()[0])
    return out


def sys_cpu():
    """(busy, total) jiffies of the whole machine, from /proc/stat"""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


def busy_frac(a, b):
    return (b[0] - a[0]) / max(1, b[1] - a[1])


def pss_kib(pid):
    """proportional set size: shared library pages divided among the processes mapping them"""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class Sampler:
    """Samples a pid's VmRSS on each tick(); remembers (t, kib)."""

    def __init__(self, pid):
        self.pid = pid
        self.samples = []
        self.anon = []
        self.pss = []

    def tick(self):
        try:
            m = mem_kib(self.pid)
            self.samples.append((time.monotonic(), m["VmRSS"]))
            self.anon.append((time.monotonic(), m["RssAnon"]))
            p = pss_kib(self.pid)
            if p is not None:
                self.pss.append((time.monotonic(), p))
        except (OSError, KeyError):
            pass

    @staticmethod
    def _steady(series, t_from, t_to):
        mid = t_from + (t_to - t_from) / 2
        xs = [k for t, k in series if mid <= t <= t_to] or [k for _, k in series[-3:]]
        return statistics.median(xs) / 1024 if xs else None

    def anon_steady_mib(self, t_from, t_to):
        """median private (anonymous) RSS over the second half of [t_from, t_to]; VmRSS
        also counts the resident pages of shared libraries (libcrypto, libsqlite3, ...)"""
        return self._steady(self.anon, t_from, t_to)

    def pss_steady_mib(self, t_from, t_to):
        return self._steady(self.pss, t_from, t_to)

    def steady_mib(self, t_from, t_to):
        """median RSS over the second half of [t_from, t_to]"""
        mid = t_from + (t_to - t_from) / 2
        xs = [k for t, k in self.samples if mid <= t <= t_to] or [k for _, k in self.samples[-3:]]
        return statistics.median(xs) / 1024 if xs else None

    def max_mib(self, t_from=0, t_to=float("inf")):
        xs = [k for t, k in self.samples if t_from <= t <= t_to]
        return max(xs) / 1024 if xs else None

    def min_mib(self, t_from=0, t_to=float("inf")):
        xs = [k for t, k in self.samples if t_from <= t <= t_to]
        return min(xs) / 1024 if xs else None


# ---- the pieces --------------------------------------------------------------------------
def start_broker(d):
    port = free_port()
    conf = subprocess.run([REPO / "certs/render-broker-conf.sh", "--certs", CERTS, "--port", str(port),
                           "--dir", d / "broker", "--log", d / "broker" / "mosquitto.log", "--loadgen"],
                          check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    pr = Proc(["mosquitto", "-c", conf], d / "broker" / "stdout.log")
    wait_until(lambda: port_open(port) or not pr.alive(), 10, "mosquitto")
    if not pr.alive():
        raise RuntimeError(f"mosquitto exited; see {d}/broker")
    return pr, port


def start_sub(d, port, topics, count, name, ident="ops", idle=10, timeout=None, loop="mosquitto", certs=CERTS):
    ready = d / f"{name}.ready"
    out = d / f"{name}.json"
    argv = [BIN / "bench_sub", "--port", port, "--cafile", certs / "ca.crt", "--cert", certs / f"{ident}.crt",
            "--key", certs / f"{ident}.key", "--count", count, "--idle", idle,
            "--timeout", timeout or P["run_timeout"], "--ready", ready, "--out", out,
            "--client-id", f"bench-{name}", "--loop", loop]
    for t in topics:
        argv += ["-t", t]
    pr = Proc(argv, d / f"{name}.log")
    wait_until(lambda: ready.exists() or not pr.alive(), 10, f"{name} subscribed")
    if not pr.alive():
        raise RuntimeError(f"bench_sub {name} exited; see {d}/{name}.log")
    return pr, out


def sim_argv(port, d, name, msgs=None, rate=None, duration=None, certs=CERTS, topic_template=None):
    argv = [BIN / "device_sim", "--host", "127.0.0.1", "--port", port, "--cafile", certs / "ca.crt",
            "--cert", certs / "loadgen.crt", "--key", certs / "loadgen.key", "--connections", P["conns"],
            "--things", P["things"], "--qos", "1", "--seed", "7", "--quiet",
            "--summary-json", d / f"{name}.json"]
    if topic_template:
        argv += ["--topic-template", topic_template]
    if rate is None:
        argv += ["--max-rate", "--count", msgs // P["things"]]
    else:
        argv += ["--rate", f"{rate:.3f}", "--duration", duration]
    return argv


def read_json(p):
    with open(p) as f:
        return json.load(f)


def tidegate_conf(d, port, http, lake, data, rules=True, sinks=None):
    rules_dir = REPO / "rules"
    lines = [f"gateway_id = gw-bench", f"data_dir = {data}", "log_level = warn", "[broker]",
             f"port = {port}", f"ca_file = {CERTS}/ca.crt", f"cert_file = {CERTS}/gateway.crt",
             f"key_file = {CERTS}/gateway.key", "subscribe = devices/+/telemetry", "[ingest]"]
    if rules and rules_dir.is_dir() and glob.glob(str(rules_dir / "*.json")):
        lines.append(f"rules_dir = {rules_dir}")
        if (rules_dir / "schemas").is_dir():
            lines.append(f"schemas_dir = {rules_dir / 'schemas'}")
    lines += ["[http]", f"port = {http}", "[sink lake]", "type = file", f"path = {lake}"]
    lines += sinks or []
    conf = d / "tidegate.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


def metrics(http):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None
    m = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        k, _, v = line.rpartition(" ")
        try:
            m[k] = float(v)
        except ValueError:
            pass
    return m


def sink_ok(m, sink="lake"):
    return m.get(f'tidegate_sink_records_total{{sink="{sink}",outcome="ok"}}', 0) if m else 0


def all_delivered(m, n):
    """n messages received, and every outbox row committed so far delivered by its sink
    (a record routed to two sinks, or twice, is two rows)"""
    if not m or m.get("tidegate_messages_received_total", 0) < n:
        return False
    ok = sum(v for k, v in m.items() if k.startswith("tidegate_sink_records_total{") and 'outcome="ok"' in k)
    return ok >= m.get("tidegate_outbox_appended_total", 0) > 0


def start_tidegate(d, conf, http):
    pr = Proc([BIN / "tidegate", "run", "-c", conf], d / "tidegate.log")
    wait_until(lambda: (metrics(http) is not None) or not pr.alive(), 15, "tidegate /metrics", 0.05)
    if not pr.alive():
        raise RuntimeError(f"tidegate exited; see {d}/tidegate.log")
    return pr


def lake_records(lake, table="telemetry"):
    recs = []
    for f in glob.glob(f"{lake}/{table}/**/*", recursive=True):
        if os.path.isfile(f) and (".json" in f):
            with open(f, "rb") as fh:
                for line in fh:
                    if line.strip():
                        recs.append(line)
    return recs


def rfc3339_ms(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() * 1000.0


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


# ---- scenarios ---------------------------------------------------------------------------
def run_ceiling(d, loop="mosquitto"):
    """loop="mqtt_io": the counting subscriber runs the daemon's network loop (for comparison)."""
    d.mkdir(parents=True)
    broker, port = start_broker(d)
    try:
        sub, out = start_sub(d, port, ["devices/#"], P["msgs"], "sub", ident="ops", loop=loop)
        bcpu0, sys0 = cpu_seconds(broker.pid), sys_cpu()
        t0 = time.monotonic()
        sim = Proc(sim_argv(port, d, "sim", msgs=P["msgs"]), d / "sim.log")
        sim_cpu = sim.wait_cpu(P["run_timeout"])
        sub_cpu = sub.wait_cpu(P["run_timeout"])
        bcpu1, sys1 = cpu_seconds(broker.pid), sys_cpu()
        s = read_json(out)
        simj = read_json(d / "sim.json")
        ok = s["count"] == P["msgs"] and simj["acked"] == P["msgs"]
        rate = s["count"] / (s["last_mono_s"] - t0) if s["count"] else 0
        return dict(msgs_per_s=rate, received=s["count"], sent=simj["sent"], acked=simj["acked"],
                    sim_rate=simj["rate"], lat_ms=s["lat_ms"], complete=ok,
                    broker_cpu_s_per_1m=(bcpu1 - bcpu0) / max(1, s["count"]) * 1e6,
                    sub_cpu_s_per_1m=sub_cpu / max(1, s["count"]) * 1e6,
                    sim_cpu_s_per_1m=sim_cpu / max(1, s["count"]) * 1e6,
                    machine_busy=busy_frac(sys0, sys1))
    finally:
        stop_all()


def run_tidegate(d, ceiling_rate=None):
    d.mkdir(parents=True)
    broker, port = start_broker(d)
    try:
        http = free_port()
        lake = d / "lake"
        conf = tidegate_conf(d, port, http, lake, d / "data")
        tg = start_tidegate(d, conf, http)
        wait_until(lambda: (metrics(http) or {}).get("tidegate_broker_connected") == 1, 15, "tidegate connected")
        time.sleep(0.3)  # SUBSCRIBE follows CONNACK; no messages may be published before it
        alerts, alerts_out = start_sub(d, port, ["alerts/#"], 0, "alerts", ident="ops", idle=3600)
        perf = None
        if os.environ.get("BENCH_PERF"):  # profile the daemon during the load (diagnosis only)
            perf = Proc(["perf", "record", "-q", "-e", "cpu-clock", "-F", "999", "--call-graph", "dwarf,16384",
                         "-p", tg.pid, "-o", os.environ["BENCH_PERF"]], d / "perf.log")
            time.sleep(0.5)
        samp = Sampler(tg.pid)
        samp.tick()
        cpu0 = cpu_seconds(tg.pid)
        bcpu0, sys0 = cpu_seconds(broker.pid), sys_cpu()
        t0 = time.monotonic()
        sim = Proc(sim_argv(port, d, "sim", msgs=P["msgs"]), d / "sim.log")
        done_t = None
        deadline = t0 + P["run_timeout"]
        last_ok = 0
        while time.monotonic() < deadline:
            samp.tick()
            m = metrics(http)
            last_ok = sink_ok(m)
            if all_delivered(m, P["msgs"]):
                done_t = time.monotonic()
                break
            time.sleep(0.05)
        cpu1 = cpu_seconds(tg.pid)
        bcpu1, sys1 = cpu_seconds(broker.pid), sys_cpu()
        if perf:
            os.killpg(perf.pid, signal.SIGINT)
            perf.wait(60)
        # RSS settles after the burst: a few more samples with the daemon idle
        t_end = time.monotonic()
        for _ in range(10):
            samp.tick()
            time.sleep(0.1)
        hwm = mem_kib(tg.pid)["VmHWM"] / 1024
        sim.wait(30)
        simj = read_json(d / "sim.json")
        m = metrics(http) or {}
        tg.stop()
        alerts.stop()
        recs = lake_records(lake)
        res = dict(
            received_at_far_end=int(last_ok),
            complete=done_t is not None and len(recs) >= P["msgs"] and simj["acked"] == P["msgs"],
            lake_records=len(recs),
            msgs_per_s=(P["msgs"] / (done_t - t0)) if done_t else last_ok / (time.monotonic() - t0),
            sim_rate=simj["rate"],
            cpu_s_per_1m=(cpu1 - cpu0) / max(1, last_ok) * 1e6,
            broker_cpu_s_per_1m=(bcpu1 - bcpu0) / max(1, last_ok) * 1e6,
            machine_busy=busy_frac(sys0, sys1),
            rss_peak_mib=hwm,
            rss_steady_mib=samp.steady_mib(t0, t_end),
            rss_anon_steady_mib=samp.anon_steady_mib(t0, t_end),
            pss_steady_mib=samp.pss_steady_mib(t0, t_end),
            accepted=m.get("tidegate_messages_accepted_total"),
            quarantined=m.get("tidegate_messages_quarantined_total"),
            republished=m.get("tidegate_republished_total"),
            commits=m.get("tidegate_outbox_commits_total"),
        )
        return res
    finally:
        stop_all()


def run_latency_ref(d, ceiling_rate):
    """the same 50 % load into the counting subscriber: the broker's own share of latency"""
    d.mkdir(parents=True)
    broker, port = start_broker(d)
    try:
        sub, out = start_sub(d, port, ["devices/#"], 0, "sub", ident="ops", idle=3)
        sim = Proc(sim_argv(port, d, "sim", rate=0.5 * ceiling_rate / P["things"], duration=P["lat_seconds"])
                   + ["--anomaly-rate", "0.02"], d / "sim.log")
        sim.wait(P["lat_seconds"] + 30)
        sub.wait(30)
        s = read_json(out)
        return dict(received=s["count"], lat_ms=s["lat_ms"])
    finally:
        stop_all()


def run_latency(d, ceiling_rate, frac=0.5):
    """tidegate at frac x the given rate for lat_seconds; device ts -> ingest and -> alert."""
    d.mkdir(parents=True)
    broker, port = start_broker(d)
    try:
        http = free_port()
        lake = d / "lake"
        conf = tidegate_conf(d, port, http, lake, d / "data")
        tg = start_tidegate(d, conf, http)
        wait_until(lambda: (metrics(http) or {}).get("tidegate_broker_connected") == 1, 15, "tidegate connected")
        time.sleep(0.3)
        alerts, alerts_out = start_sub(d, port, ["alerts/#"], 0, "alerts", ident="ops", idle=3600)
        target = frac * ceiling_rate
        per_thing = target / P["things"]
        samp = Sampler(tg.pid)
        t0 = time.monotonic()
        sim = Proc(sim_argv(port, d, "sim", rate=per_thing, duration=P["lat_seconds"])
                   + ["--anomaly-rate", "0.02"], d / "sim.log")
        while sim.alive() and time.monotonic() < t0 + P["lat_seconds"] + 30:
            samp.tick()
            time.sleep(0.1)
        sim.wait(30)
        simj = read_json(d / "sim.json")
        wait_until(lambda: all_delivered(metrics(http), simj["acked"]), 30, "lake caught up", 0.05)
        time.sleep(0.5)
        alerts.stop()
        tg.stop()
        a = read_json(alerts_out) if alerts_out.exists() else {"count": 0, "lat_ms": {}}
        lat = []
        for line in lake_records(lake):
            r = json.loads(line)
            if isinstance(r.get("ts"), (int, float)) and "received_at" in r:
                lat.append(rfc3339_ms(r["received_at"]) - r["ts"])
        return dict(offered_per_s=target, achieved_per_s=simj["rate"], sent=simj["sent"],
                    ingest_lat_ms=dict(p50=pct(lat, 0.5), p99=pct(lat, 0.99), max=max(lat) if lat else None,
                                       n=len(lat)),
                    alerts=a["count"], alert_lat_ms=a.get("lat_ms", {}),
                    rss_steady_mib=samp.steady_mib(t0, time.monotonic()))
    finally:
        stop_all()


NR_FLOW_TMPL = [
    {"id": "tab1", "type": "tab", "label": "tidegate-equivalent"},
    {"id": "tls1", "type": "tls-config", "name": "mtls", "cert": "@CERTS@/gateway.crt",
     "key": "@CERTS@/gateway.key", "ca": "@CERTS@/ca.crt", "certname": "", "keyname": "", "caname": "",
     "servername": "", "verifyservercert": True, "alpnprotocol": ""},
    {"id": "broker1", "type": "mqtt-broker", "name": "local", "broker": "127.0.0.1", "port": "@PORT@",
     "tls": "tls1", "clientid": "bench-node-red", "autoConnect": True, "usetls": True, "protocolVersion": "5",
     "keepalive": "60", "cleansession": True, "autoUnsubscribe": True, "birthTopic": "", "closeTopic": "",
     "willTopic": "", "sessionExpiry": ""},
    {"id": "in1", "type": "mqtt in", "z": "tab1", "name": "telemetry", "topic": "devices/+/telemetry", "qos": "1",
     "datatype": "utf8", "broker": "broker1", "nl": False, "rap": True, "rh": 0, "inputs": 0,
     "x": 100, "y": 100, "wires": [["json1"]]},
    {"id": "json1", "type": "json", "z": "tab1", "name": "", "property": "payload", "action": "obj",
     "pretty": False, "x": 250, "y": 100, "wires": [["file1", "switch1"]]},
    {"id": "switch1", "type": "switch", "z": "tab1", "name": "temperature > 28",
     "property": "payload.temperature", "propertyType": "msg",
     "rules": [{"t": "gt", "v": "28", "vt": "num"}], "checkall": "true", "repair": False, "outputs": 1,
     "x": 420, "y": 160, "wires": [["topic1"]]},
    {"id": "topic1", "type": "change", "z": "tab1", "name": "alerts/<thing>",
     "rules": [{"t": "change", "p": "topic", "pt": "msg", "from": "devices/", "fromt": "str",
                "to": "alerts/", "tot": "str"}],
     "x": 600, "y": 160, "wires": [["out1"]]},
    {"id": "out1", "type": "mqtt out", "z": "tab1", "name": "republish", "topic": "", "qos": "1", "retain": "false",
     "broker": "broker1", "x": 780, "y": 160, "wires": []},
    {"id": "file1", "type": "file", "z": "tab1", "name": "lake", "filename": "@LAKE@", "filenameType": "str",
     "appendNewline": True, "createDir": True, "overwriteFile": "false", "encoding": "none",
     "x": 420, "y": 60, "wires": [[]]},
]

NR_SETTINGS = """// Generated by tests/bench/bench.py: loopback only, nothing that reaches the network.
module.exports = {
    uiHost: '127.0.0.1',
    uiPort: @HTTP@,
    flowFile: 'flows.json',
    flowFilePretty: true,
    credentialSecret: false,
    httpAdminRoot: '/',
    httpNodeRoot: '/api',
    logging: { console: { level: 'info', metrics: false, audit: false } },
    telemetry: { enabled: false, updateNotification: false },
    diagnostics: { enabled: false, ui: false },
    externalModules: { autoInstall: false, palette: { allowInstall: false, allowUpload: false },
                       modules: { allowInstall: false } },
    editorTheme: { tours: false, palette: { catalogues: [] }, projects: { enabled: false } },
    exportGlobalContextKeys: false,
    functionExternalModules: false,
};
"""


def count_lines(path, state):
    """incremental newline count of a growing file; state = [offset, count]"""
    try:
        with open(path, "rb") as f:
            f.seek(state[0])
            chunk = f.read()
    except FileNotFoundError:
        return state[1]
    state[0] += len(chunk)
    state[1] += chunk.count(b"\n")
    return state[1]


def run_node_red(d):
    d.mkdir(parents=True)
    broker, port = start_broker(d)
    try:
        user = d / "nr"
        user.mkdir()
        http = free_port()
        lake = d / "lake" / "telemetry.ndjson"
        flow = json.dumps(NR_FLOW_TMPL).replace("@CERTS@", str(CERTS)).replace("@LAKE@", str(lake))
        flow = flow.replace('"@PORT@"', f'"{port}"')
        (user / "flows.json").write_text(flow)
        (user / "settings.js").write_text(NR_SETTINGS.replace("@HTTP@", str(http)))
        env = dict(os.environ, NODE_RED_ENABLE_PROJECTS="false", NO_UPDATE_NOTIFIER="1")
        nr = Proc(["node", NR_DIR / "node_modules" / "node-red" / "red.js", "--settings", user / "settings.js",
                   "--userDir", user], d / "node-red.log", cwd=user, env=env)
        wait_until(lambda: b"Connected to broker" in (d / "node-red.log").read_bytes() or not nr.alive(), 60,
                   "node-red connected to the broker", 0.1)
        if not nr.alive():
            raise RuntimeError(f"node-red exited; see {d}/node-red.log")
        time.sleep(1.0)  # its SUBSCRIBE follows the connect log line
        alerts, alerts_out = start_sub(d, port, ["alerts/#"], 0, "alerts", ident="ops", idle=3600)
        samp = Sampler(nr.pid)
        samp.tick()
        cpu0 = cpu_seconds(nr.pid)
        t0 = time.monotonic()
        sim = Proc(sim_argv(port, d, "sim", msgs=P["nr_msgs"]), d / "sim.log")
        st = [0, 0]
        last_change, last_n, done = t0, 0, False
        while time.monotonic() < t0 + P["nr_seconds"]:
            samp.tick()
            n = count_lines(lake, st)
            now = time.monotonic()
            if n != last_n:
                last_change, last_n = now, n
            if n >= P["nr_msgs"]:
                done = True
                break
            time.sleep(0.1)
        t1 = time.monotonic()
        n = count_lines(lake, st)
        cpu1 = cpu_seconds(nr.pid)
        hwm = mem_kib(nr.pid)["VmHWM"] / 1024
        sim.stop()
        alerts.stop()
        nr.stop()
        a = read_json(alerts_out) if alerts_out.exists() else {"count": 0}
        span = (last_change if done else t1) - t0
        return dict(msgs_per_s=n / span if span > 0 else 0, written=n, window_s=span, complete=done,
                    cpu_s_per_1m=(cpu1 - cpu0) / max(1, n) * 1e6, rss_peak_mib=hwm,
                    rss_steady_mib=samp.steady_mib(t0, t1), rss_anon_steady_mib=samp.anon_steady_mib(t0, t1),
                    pss_steady_mib=samp.pss_steady_mib(t0, t1),
                    alerts=a["count"],
                    version=json.loads((NR_DIR / "node_modules/node-red/package.json").read_text())["version"])
    finally:
        stop_all()


def run_backlog(d):
    d.mkdir(parents=True)
    data = d / "data"
    data.mkdir()
    broker, port = start_broker(d)
    try:
        fill = subprocess.run([BIN / "bench_outbox", "--db", data / "outbox.db", "--records", str(P["backlog"]),
                               "--sink", "lake", "--gateway-id", "gw-bench"],
                              check=True, capture_output=True, text=True, timeout=P["run_timeout"])
        filled = json.loads(fill.stdout.strip().splitlines()[-1])
        # 1) the uplink is down: a regular file sits where the sink's table folder must go,
        #    so every batch fails with a retry and stays in the outbox
        lake = d / "lake"
        lake.mkdir()
        (lake / "telemetry").write_text("blocks the sink\n")
        http = free_port()
        conf = tidegate_conf(d, port, http, lake, data, rules=False, sinks=["retry_base = 50ms", "retry_cap = 500ms"])
        t0 = time.monotonic()
        tg = start_tidegate(d, conf, http)
        samp = Sampler(tg.pid)
        while time.monotonic() < t0 + P["sit_seconds"]:
            samp.tick()
            time.sleep(0.1)
        m = metrics(http) or {}
        sit = dict(rss_min_mib=samp.min_mib(), rss_max_mib=samp.max_mib(), delivered_while_down=sink_ok(m),
                   rss_anon_mib=samp.anon_steady_mib(t0, time.monotonic()),
                   retries=m.get('tidegate_sink_records_total{sink="lake",outcome="retry"}'),
                   outbox_rows=m.get("tidegate_outbox_rows"))
        # 2) the uplink comes back (same process): time the drain
        (lake / "telemetry").unlink()
        t1 = time.monotonic()
        cpu0 = cpu_seconds(tg.pid)
        done_t, ok = None, 0
        while time.monotonic() < t1 + P["run_timeout"] * 2:
            samp.tick()
            ok = sink_ok(metrics(http))
            if ok >= P["backlog"]:
                done_t = time.monotonic()
                break
            time.sleep(0.1)
        cpu1 = cpu_seconds(tg.pid)
        hwm = mem_kib(tg.pid)["VmHWM"] / 1024
        tg.stop()
        n = len(lake_records(lake))
        return dict(records=P["backlog"], fill=filled, sit=sit, drained=int(ok), lake_records=n,
                    complete=done_t is not None and n >= P["backlog"],
                    drain_s=(done_t - t1) if done_t else None,
                    drain_per_s=(P["backlog"] / (done_t - t1)) if done_t else ok / (time.monotonic() - t1),
                    cpu_s_per_1m=(cpu1 - cpu0) / max(1, ok) * 1e6, rss_peak_mib=hwm,
                    rss_max_during_drain_mib=samp.max_mib(t1),
                    rss_anon_steady_mib=samp.anon_steady_mib(t1, done_t or time.monotonic()), rss_steady_mib=samp.steady_mib(t1, done_t or time.monotonic()))
    finally:
        stop_all()


def bridge_sinks(cloud, cloud_certs, nats):
    """[sink cloud] (mqtt) and [sink nats] config lines for a daemon of the upstream scenario."""
    return ["[sink cloud]", "type = mqtt", "host = 127.0.0.1", f"port = {cloud.port}",
            f"ca_file = {cloud_certs / 'ca.crt'}", f"cert_file = {cloud_certs / 'gateway.crt'}",
            f"key_file = {cloud_certs / 'gateway.key'}", "max_rate = 0", "retry_base = 100ms", "retry_cap = 1s",
            "[sink nats]", "type = nats", f"url = {nats.url}", "stream = TG", "retry_base = 100ms", "retry_cap = 1s"]


def drain(d, data, sinks_cfg, names, n, port, cpu_rows=None):
    """Start the daemon on an outbox that holds n records for each sink in names, wait until
    every one of those sinks delivered n (bounded), stop it. Per-sink seconds/rates, RSS."""
    http = free_port()
    conf = tidegate_conf(d, port, http, d / "lake", data, rules=False, sinks=sinks_cfg)
    t0 = time.monotonic()
    tg = start_tidegate(d, conf, http)
    samp = Sampler(tg.pid)
    cpu0 = cpu_seconds(tg.pid)
    done, m = {}, {}
    while time.monotonic() < t0 + P["run_timeout"] * 2 and len(done) < len(names):
        samp.tick()
        m = metrics(http) or m
        for sk in names:
            if sk not in done and sink_ok(m, sk) >= n:
                done[sk] = time.monotonic() - t0
        time.sleep(0.05)
    cpu1 = cpu_seconds(tg.pid)
    hwm = mem_kib(tg.pid)["VmHWM"] / 1024
    tg.stop()
    per = {sk: dict(delivered=int(sink_ok(m, sk)), seconds=done.get(sk),
                    per_s=(n / done[sk]) if sk in done else sink_ok(m, sk) / (time.monotonic() - t0))
           for sk in names}
    return dict(sinks=per, complete=len(done) == len(names), all_s=max(done.values()) if len(done) == len(names) else None,
                cpu_s_per_1m_rows=(cpu1 - cpu0) / max(1, sum(p["delivered"] for p in per.values())) * 1e6,
                rss_peak_mib=hwm, rss_steady_mib=samp.steady_mib(t0, time.monotonic()),
                rss_anon_steady_mib=samp.anon_steady_mib(t0, time.monotonic()))


def fill_outbox(data, n, sinks):
    argv = [BIN / "bench_outbox", "--db", data / "outbox.db", "--records", str(n), "--gateway-id", "gw-bench"]
    for sk in sinks:
        argv += ["--sink", sk]
    r = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=P["run_timeout"])
    return json.loads(r.stdout.strip().splitlines()[-1])


def run_upstream(d, cloud_certs):
    """A backlog for five sinks at once, drained with the uplinks up: the lake, the Kinesis
    API (kinesalite 3.3.3), the S3 API (s3rver 3.7.1), the MQTT bridge to a cloud broker (a
    second mosquitto, mTLS with its own CA, a bench_sub counting on it) and NATS JetStream
    (nats-server -js, one stream) — per-sink drain rate and the daemon's RSS. Smaller than
    the lake-only backlog: kinesalite is a Node.js look-alike and far slower than the real
    service or the file sink. Then, in the same repetition, each message sink alone on a
    backlog of its own, and the ceiling of its broker measured the same way as the local
    one (4 publishers at max rate, QoS 1 / JetStream acks), for the ratio."""
    sys.path.insert(0, str(REPO / "tests" / "integration"))
    import aws_peers
    import cloud_peers
    d.mkdir(parents=True)
    (d / "kin").mkdir()
    (d / "s3").mkdir()
    n = P["upstream_backlog"]
    broker, port = start_broker(d)
    try:
        with aws_peers.Kinesalite(workdir=str(d / "kin")) as kin, \
                aws_peers.S3rver(workdir=str(d / "s3"), bucket="lake") as s3, \
                cloud_peers.CloudBroker(_CertDir(cloud_certs), d) as cloud, \
                cloud_peers.NatsServer(d) as nats:
            kin.create_stream("tg", shards=4)
            with nats.client() as c:
                c.stream_create("TG", ["tidegate.>"])
            five = ["lake", "kin", "s3", "cloud", "nats"]
            data = d / "data"
            data.mkdir()
            fill = fill_outbox(data, n, five)
            sinks = ["retry_base = 100ms", "retry_cap = 1s",
                     "[sink kin]", "type = kinesis", "stream = tg", f"endpoint = {kin.endpoint}",
                     f"access_key_id = {aws_peers.KINESIS_KEY}", f"secret_access_key = {aws_peers.KINESIS_SECRET}",
                     "retry_base = 100ms", "retry_cap = 1s",
                     "[sink s3]", "type = s3", "bucket = lake", "prefix = edge", f"endpoint = {s3.endpoint}",
                     "path_style = true", f"access_key_id = {aws_peers.S3RVER_KEY}",
                     f"secret_access_key = {aws_peers.S3RVER_SECRET}", "flush_age = 1s", "flush_bytes = 1M",
                     "retry_base = 100ms", "retry_cap = 1s"] + bridge_sinks(cloud, cloud_certs, nats)
            csub, csub_out = start_sub(d, cloud.port, ["tidegate/#"], n, "cloud-sub", idle=3600, certs=cloud_certs,
                                       timeout=P["run_timeout"] * 3)
            (d / "five").mkdir()
            res = drain(d / "five", data, sinks, five, n, port)
            csub.stop()
            cloud_got = read_json(csub_out)["count"] if csub_out.exists() else None
            with nats.client() as c:
                js_got = c.stream_count("TG")
            res.update(records=n, fill=fill, cloud_received=cloud_got, stream_messages=js_got,
                       records_per_s=(n / res["all_s"]) if res["all_s"] else None)
            res["complete"] = res["complete"] and cloud_got is not None and cloud_got >= n and js_got >= n
            # each message sink alone, then its broker's ceiling, back to back
            res["alone"] = {}
            for sk in ("cloud", "nats"):
                dd = d / f"{sk}-alone"
                dd.mkdir()
                (dd / "data").mkdir()
                fill_outbox(dd / "data", n, [sk])
                if sk == "nats":
                    with nats.client() as c:
                        c.request("$JS.API.STREAM.PURGE.TG", b"")
                res["alone"][sk] = drain(dd, dd / "data", bridge_sinks(cloud, cloud_certs, nats), [sk], n, port)
            res["ceiling"] = dict(cloud=cloud_ceiling(d / "cloud-ceiling", cloud, cloud_certs),
                                  nats=nats_ceiling(nats))
            for sk in ("cloud", "nats"):
                a, c = res["alone"][sk]["sinks"][sk]["per_s"], res["ceiling"][sk].get("per_s")
                res["alone"][sk]["ratio"] = (a / c) if a and c else None
                res["complete"] = res["complete"] and res["alone"][sk]["complete"] and res["ceiling"][sk]["complete"]
            return res
    finally:
        stop_all()


class _CertDir:
    """What cloud_peers.CloudBroker wants of a certs folder: .dir and .ca."""

    def __init__(self, path):
        self.dir = Path(path)
        self.ca = self.dir / "ca.crt"


def cloud_ceiling(d, cloud, cloud_certs):
    """The cloud broker's ceiling, measured like the local one: device_sim load mode
    (4 mTLS connections, max rate, QoS 1, every PUBACK awaited) -> cloud mosquitto ->
    bench_sub counting, on the topics the bridge publishes to."""
    d.mkdir(parents=True)
    sub, out = start_sub(d, cloud.port, ["tidegate/#"], P["upstream_backlog"], "sub", certs=cloud_certs)
    t0 = time.monotonic()
    sim = Proc(sim_argv(cloud.port, d, "sim", msgs=P["upstream_backlog"], certs=cloud_certs,
                        topic_template="tidegate/telemetry/%s"), d / "sim.log")
    sim.wait(P["run_timeout"])
    sub.wait(P["run_timeout"])
    s = read_json(out)
    return dict(received=s["count"], per_s=s["count"] / (s["last_mono_s"] - t0) if s["count"] else None,
                complete=s["count"] == P["upstream_backlog"])


def nats_ceiling(nats):
    """nats-server's JetStream ceiling: bench_nats, 4 connections publishing async with a
    Nats-Msg-Id each (the sink's cost), counted when the last acknowledgement arrived."""
    with nats.client() as c:
        c.request("$JS.API.STREAM.PURGE.TG", b"")
    r = subprocess.run([BIN / "bench_nats", "--url", nats.url, "--count", str(P["upstream_backlog"]), "--conns",
                        str(P["conns"]), "--stream", "TG", "--subject", "tidegate.bench"],
                       capture_output=True, text=True, timeout=P["run_timeout"])
    try:
        j = json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return dict(per_s=None, complete=False, error=r.stderr[-500:])
    return dict(per_s=j["per_s"], received=j["acked"], complete=r.returncode == 0)


def run_append(d):
    d.mkdir(parents=True)
    r = subprocess.run([BIN / "bench_outbox", "--db", d / "outbox.db", "--records", str(P["append_records"])],
                       check=True, capture_output=True, text=True, timeout=P["run_timeout"])
    return json.loads(r.stdout.strip().splitlines()[-1])


def run_micro_others(d):
    """Every other build/rel/bench_* program, run as `prog 1` (1 s per figure) with BENCH_QUICK
    in the environment; JSON lines with a "name" are figures, other output is kept as text."""
    res = {}
    mine = {"bench_sub", "bench_outbox", "bench_nats"}
    for exe in sorted(glob.glob(str(BIN / "bench_*"))):
        name = os.path.basename(exe)
        if name in mine or not os.access(exe, os.X_OK):
            continue
        # bench_schema takes (messages per stage, repetitions); the others (seconds per figure)
        args = ["200000" if QUICK else "1000000", "3"] if name == "bench_schema" else ["1"]
        try:
            r = subprocess.run([exe, *args], capture_output=True, text=True, timeout=300, cwd=REPO,
                               env=dict(os.environ, BENCH_QUICK="1" if QUICK else "0"))
            out = r.stdout
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            r = None
        figs = []
        for line in out.splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    o = json.loads(line)
                    if "name" in o:
                        figs.append(o)
                except ValueError:
                    pass
        res[name] = dict(rc=r.returncode if r else "timeout", figures=figs,
                         text=None if figs else out.strip().splitlines()[-10:])
    return res


# ---- main ----------------------------------------------------------------------------------
def median_of(runs, *path):
    xs = []
    for r in runs:
        v = r
        for k in path:
            v = v.get(k) if isinstance(v, dict) else None
        if isinstance(v, (int, float)):
            xs.append(v)
    return statistics.median(xs) if xs else None


def fmt(v, nd=0):
    if v is None:
        return "n/a"
    if nd == 0:
        return f"{v:,.0f}"
    return f"{v:,.{nd}f}"


def main():
    t_start = time.monotonic()
    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="tg-bench-"))
    log(f"{'quick' if QUICK else 'full'} run, work dir {work}, params {P}")
    raw = dict(params=P, quick=QUICK, started=datetime.datetime.now(datetime.timezone.utc).isoformat(),
               host=dict(nproc=os.cpu_count(), uname=" ".join(os.uname())),
               git=subprocess.run(["git", "-C", REPO, "describe", "--always", "--dirty"], capture_output=True,
                                  text=True).stdout.strip(),
               ceiling=[], ceiling_io=[], tidegate=[], latency=[], latency_half_tg=[], node_red=[], backlog=[], upstream=[], append=[], micro={})
    have_nr = (NR_DIR / "node_modules" / "node-red" / "red.js").exists()
    have_peers = (REPO / "tests" / "node_modules" / "kinesalite").is_dir() and \
        (REPO / "tests" / "node_modules" / "s3rver").is_dir() and (REPO / "tests/integration/aws_peers.py").exists() \
        and shutil.which("nats-server") is not None and (BIN / "bench_nats").exists()
    cloud_certs = None
    if wanted("upstream") and have_peers:  # the cloud broker's own CA, made once per run
        cloud_certs = work / "cloud-certs"
        subprocess.run([REPO / "certs" / "make-certs.sh", cloud_certs, "--things", "1"], check=True, capture_output=True)
    for rep in range(P["reps"]):
        if wanted("ceiling"):
            log(f"rep {rep + 1}/{P['reps']}: ceiling")
            raw["ceiling"].append(run_ceiling(work / f"ceiling-{rep}"))
            log(f"  ceiling {raw['ceiling'][-1]['msgs_per_s']:.0f} msg/s")
            raw["ceiling_io"].append(run_ceiling(work / f"ceiling-io-{rep}", loop="mqtt_io"))
            log(f"  ceiling, subscriber with tidegate's network loop {raw['ceiling_io'][-1]['msgs_per_s']:.0f} msg/s")
        if wanted("tidegate"):
            log(f"rep {rep + 1}: tidegate end to end")
            raw["tidegate"].append(run_tidegate(work / f"tidegate-{rep}"))
            log(f"  tidegate {raw['tidegate'][-1]['msgs_per_s']:.0f} msg/s")
        if wanted("latency") and raw["ceiling"]:
            log(f"rep {rep + 1}: latency at 50 % of the ceiling")
            raw["latency"].append(run_latency(work / f"latency-{rep}", raw["ceiling"][-1]["msgs_per_s"]))
            raw["latency"][-1]["broker_only"] = run_latency_ref(work / f"latency-ref-{rep}",
                                                                raw["ceiling"][-1]["msgs_per_s"])
            if raw["tidegate"]:  # and at half of what tidegate itself sustained in this rep
                raw["latency_half_tg"].append(run_latency(work / f"latency-tg-{rep}",
                                                          raw["tidegate"][-1]["msgs_per_s"]))
        if wanted("node-red") and have_nr:
            log(f"rep {rep + 1}: node-red")
            raw["node_red"].append(run_node_red(work / f"node-red-{rep}"))
            log(f"  node-red {raw['node_red'][-1]['msgs_per_s']:.0f} msg/s")
        if wanted("backlog"):
            log(f"rep {rep + 1}: backlog of {P['backlog']}")
            raw["backlog"].append(run_backlog(work / f"backlog-{rep}"))
            log(f"  drain {raw['backlog'][-1]['drain_per_s']:.0f} rec/s")
        if wanted("upstream") and have_peers:
            log(f"rep {rep + 1}: backlog of {P['upstream_backlog']} to lake + kinesalite + s3rver + cloud mosquitto"
                f" + nats-server, then the MQTT and NATS sinks alone and their brokers' ceilings")
            raw["upstream"].append(run_upstream(work / f"upstream-{rep}", cloud_certs))
            up = raw["upstream"][-1]
            log(f"  upstream drain {up['sinks']}; alone {[(k, round(v['sinks'][k]['per_s'])) for k, v in up['alone'].items()]}"
                f"; ceilings {up['ceiling']}")
        if wanted("append"):
            log(f"rep {rep + 1}: outbox append")
            raw["append"].append(run_append(work / f"append-{rep}"))
    log("micro benchmarks of the other modules")
    raw["micro"] = run_micro_others(work)
    raw["elapsed_s"] = time.monotonic() - t_start
    write_results(raw)
    if not KEEP:
        shutil.rmtree(work, ignore_errors=True)
    else:
        log(f"kept {work}")
    log(f"done in {raw['elapsed_s']:.0f} s")


def write_results(raw):
    ceil = median_of(raw["ceiling"], "msgs_per_s")
    tg = median_of(raw["tidegate"], "msgs_per_s")
    nr = median_of(raw["node_red"], "msgs_per_s")
    tg_rss = median_of(raw["tidegate"], "rss_steady_mib")
    tg_peak = median_of(raw["tidegate"], "rss_peak_mib")
    nr_rss = median_of(raw["node_red"], "rss_steady_mib")
    nr_peak = median_of(raw["node_red"], "rss_peak_mib")
    a_p99 = median_of(raw["latency"], "alert_lat_ms", "p99")
    i_p99 = median_of(raw["latency"], "ingest_lat_ms", "p99")
    n_alerts = median_of(raw["latency"], "alerts")
    drain = median_of(raw["backlog"], "drain_per_s")
    app = median_of(raw["append"], "per_s")
    ratio = lambda a, b: (a / b) if a and b else None
    # ratios: median of the per-repetition ratios (each pair ran back to back, so a noisy
    # neighbour affects both sides of one ratio alike)
    def rep_ratio(a_key, b_key):
        xs = [a["msgs_per_s"] / b["msgs_per_s"] for a, b in zip(raw[a_key], raw[b_key])
              if a.get("msgs_per_s") and b.get("msgs_per_s")]
        return statistics.median(xs) if xs else None

    r_ceil, r_nr = rep_ratio("tidegate", "ceiling"), rep_ratio("tidegate", "node_red")
    ceil_io = median_of(raw.get("ceiling_io", []), "msgs_per_s")
    r_ceil_io = rep_ratio("tidegate", "ceiling_io") if raw.get("ceiling_io") else None
    sit_max = median_of(raw["backlog"], "sit", "rss_max_mib")
    sit_min = median_of(raw["backlog"], "sit", "rss_min_mib")
    verdict = lambda ok: "n/a" if ok is None else ("met" if ok else "**missed**")
    complete = all(r.get("complete") for k in ("ceiling", "ceiling_io", "tidegate", "backlog", "upstream")
                   for r in raw.get(k, []))
    reps = raw["params"]["reps"]
    L = []
    L.append(f"# tidegate benchmark ({'BENCH_QUICK' if raw['quick'] else 'full'} run)\n")
    L.append(f"{raw['started'][:19]}Z, commit {raw['git']}, {raw['host']['nproc']} cores, "
             f"median of {reps} repetition{'s' if reps > 1 else ''}, took {raw['elapsed_s']:.0f} s. "
             f"Load: device_sim, {raw['params']['conns']} mTLS connections, {raw['params']['things']} things, "
             f"QoS 1, ~150-byte JSON, {raw['params']['msgs']:,} messages per run; everything on 127.0.0.1. "
             f"All messages accounted for: {'yes' if complete else '**no** (see results.json)'}.\n")
    L.append("| figure | value | ratio | target |")
    L.append("|---|---:|---:|---|")
    L.append(f"| broker ceiling (device_sim -> mosquitto -> counting subscriber) | {fmt(ceil)} msg/s | 1.00 | |")
    L.append(f"| tidegate end to end (-> outbox -> file sink, counted at the sink) | {fmt(tg)} msg/s | "
             f"{fmt(r_ceil, 2)} of ceiling | >= 0.90: {verdict(r_ceil >= 0.9 if r_ceil else None)} |")
    if ceil_io is not None:
        L.append(f"| for comparison: ceiling with the counting subscriber on tidegate's network loop (mqtt_io: "
                 f"read-ahead, one poll per batch, a round's PUBACKs in one write) | {fmt(ceil_io)} msg/s | "
                 f"tidegate = {fmt(r_ceil_io, 2)} of it | |")
    if nr is not None:
        L.append(f"| Node-RED {raw['node_red'][0]['version']} equivalent flow (counted in its file) | {fmt(nr)} msg/s | "
                 f"tidegate = {fmt(r_nr, 1)}x | >= 10x: {verdict(r_nr >= 10 if r_nr else None)} |")
    else:
        L.append("| Node-RED | not installed | | |")
    sub_cpu = median_of(raw["ceiling"], "sub_cpu_s_per_1m")
    tg_cpu = median_of(raw["tidegate"], "cpu_s_per_1m")
    L.append(f"| tidegate CPU per 1M messages (both threads) | {fmt(tg_cpu, 1)} s | "
             f"{fmt(ratio(tg_cpu, sub_cpu), 1)}x the counting subscriber | |")
    L.append(f"| ceiling run CPU per 1M: broker / device_sim / counting subscriber | "
             f"{fmt(median_of(raw['ceiling'], 'broker_cpu_s_per_1m'), 1)} / {fmt(median_of(raw['ceiling'], 'sim_cpu_s_per_1m'), 1)}"
             f" / {fmt(sub_cpu, 1)} s | | |")
    L.append(f"| machine busy (all cores, /proc/stat) during ceiling / tidegate runs | "
             f"{fmt(100 * (median_of(raw['ceiling'], 'machine_busy') or 0))} % / "
             f"{fmt(100 * (median_of(raw['tidegate'], 'machine_busy') or 0))} % | | |")
    if nr is not None:
        L.append(f"| Node-RED CPU per 1M messages | {fmt(median_of(raw['node_red'], 'cpu_s_per_1m'), 1)} s | | |")
    L.append(f"| tidegate private RSS (RssAnon) steady under load; while the backlog sits; during drain | "
             f"{fmt(median_of(raw['tidegate'], 'rss_anon_steady_mib'), 1)}; "
             f"{fmt(median_of(raw['backlog'], 'sit', 'rss_anon_mib'), 1)}; "
             f"{fmt(median_of(raw['backlog'], 'rss_anon_steady_mib'), 1)} MiB | | |")
    L.append(f"| PSS (shared pages split among their users) steady under load: tidegate / Node-RED | "
             f"{fmt(median_of(raw['tidegate'], 'pss_steady_mib'), 1)} / {fmt(median_of(raw['node_red'], 'pss_steady_mib'), 1)} MiB | | |")
    L.append(f"| tidegate RSS steady / peak under load | {fmt(tg_rss, 1)} / {fmt(tg_peak, 1)} MiB | "
             f"{fmt(ratio(tg_rss, nr_rss), 2)} of Node-RED | steady <= 16 MiB: "
             f"{verdict(tg_rss <= 16 if tg_rss else None)} |")
    if nr is not None:
        L.append(f"| Node-RED RSS steady / peak under load | {fmt(nr_rss, 1)} / {fmt(nr_peak, 1)} MiB | | |")
    lat_load = median_of(raw["latency"], "offered_per_s")
    L.append(f"| latency at 50 % of ceiling ({fmt(lat_load)} msg/s offered): device ts -> ingest p50 / p99 | "
             f"{fmt(median_of(raw['latency'], 'ingest_lat_ms', 'p50'), 1)} / {fmt(i_p99, 1)} ms | | commit follows within commit_interval (5 ms) |")
    L.append(f"| same load, broker only: device ts -> counting subscriber p50 / p99 | "
             f"{fmt(median_of(raw['latency'], 'broker_only', 'lat_ms', 'p50'), 1)} / "
             f"{fmt(median_of(raw['latency'], 'broker_only', 'lat_ms', 'p99'), 1)} ms | | |")
    if n_alerts:
        L.append(f"| latency at 50 % of ceiling: device ts -> alert republish p50 / p99 | "
                 f"{fmt(median_of(raw['latency'], 'alert_lat_ms', 'p50'), 1)} / {fmt(a_p99, 1)} ms "
                 f"({fmt(n_alerts)} alerts) | | p99 <= 10 ms: {verdict(a_p99 <= 10 if a_p99 is not None else None)} |")
    else:
        L.append("| latency: device ts -> alert republish | no alerts arrived on alerts/# (rules not active in this build) | | p99 <= 10 ms: n/a |")
    if raw["latency_half_tg"]:
        lh = raw["latency_half_tg"]
        L.append(f"| latency at 50 % of tidegate's own end-to-end rate ({fmt(median_of(lh, 'offered_per_s'))} msg/s): "
                 f"device ts -> ingest p50 / p99; -> alert p50 / p99 | "
                 f"{fmt(median_of(lh, 'ingest_lat_ms', 'p50'), 1)} / {fmt(median_of(lh, 'ingest_lat_ms', 'p99'), 1)} ms; "
                 f"{fmt(median_of(lh, 'alert_lat_ms', 'p50'), 1)} / {fmt(median_of(lh, 'alert_lat_ms', 'p99'), 1)} ms "
                 f"({fmt(median_of(lh, 'alerts'))} alerts) | | |")
    L.append(f"| backlog of {raw['params']['backlog']:,}: RSS while it sits (sink down) min / max | "
             f"{fmt(sit_min, 1)} / {fmt(sit_max, 1)} MiB | | flat, <= 16 MiB: "
             f"{verdict((sit_max - sit_min) < 2 and sit_max <= 16 if sit_max else None)} |")
    L.append(f"| backlog drain to the file sink | {fmt(drain)} rec/s | {fmt(ratio(drain, ceil), 2)} of ceiling | |")
    L.append(f"| RSS during drain steady / peak | {fmt(median_of(raw['backlog'], 'rss_steady_mib'), 1)} / "
             f"{fmt(median_of(raw['backlog'], 'rss_peak_mib'), 1)} MiB | | <= 16 MiB: "
             f"{verdict(median_of(raw['backlog'], 'rss_peak_mib') <= 16 if raw['backlog'] else None)} |")
    if raw["upstream"]:
        up = raw["upstream"]
        L.append(f"| backlog of {raw['params']['upstream_backlog']:,} to five sinks at once, drain rate: lake / "
                 f"Kinesis (kinesalite) / S3 (s3rver) / MQTT bridge (cloud mosquitto, mTLS) / NATS JetStream | "
                 f"{fmt(median_of(up, 'sinks', 'lake', 'per_s'))} / {fmt(median_of(up, 'sinks', 'kin', 'per_s'))} / "
                 f"{fmt(median_of(up, 'sinks', 's3', 'per_s'))} / {fmt(median_of(up, 'sinks', 'cloud', 'per_s'))} / "
                 f"{fmt(median_of(up, 'sinks', 'nats', 'per_s'))} rec/s | | |")
        L.append(f"| RSS during the five-sink drain steady / peak (private steady) | "
                 f"{fmt(median_of(up, 'rss_steady_mib'), 1)} / {fmt(median_of(up, 'rss_peak_mib'), 1)} MiB "
                 f"({fmt(median_of(up, 'rss_anon_steady_mib'), 1)}) | | |")
        for sk, what, ceil_how in (("cloud", "MQTT bridge", "device_sim 4 mTLS connections -> cloud mosquitto -> bench_sub"),
                                   ("nats", "NATS JetStream", "bench_nats: 4 connections, async publishes with Nats-Msg-Id, "
                                                              "counted at the last ack")):
            L.append(f"| {what} alone, backlog drain / its broker's ceiling in the same run ({ceil_how}) | "
                     f"{fmt(median_of(up, 'alone', sk, 'sinks', sk, 'per_s'))} / "
                     f"{fmt(median_of(up, 'ceiling', sk, 'per_s'))} rec/s | "
                     f"{fmt(median_of(up, 'alone', sk, 'ratio'), 2)} of ceiling | |")
        L.append(f"| RSS draining one message sink alone, steady / peak: MQTT bridge; NATS (libnats loaded) | "
                 f"{fmt(median_of(up, 'alone', 'cloud', 'rss_steady_mib'), 1)} / "
                 f"{fmt(median_of(up, 'alone', 'cloud', 'rss_peak_mib'), 1)}; "
                 f"{fmt(median_of(up, 'alone', 'nats', 'rss_steady_mib'), 1)} / "
                 f"{fmt(median_of(up, 'alone', 'nats', 'rss_peak_mib'), 1)} MiB | | |")
    else:
        L.append("| backlog drain to kinesalite / s3rver / cloud mosquitto / nats-server | peers not installed "
                 "(tests/integration/npm-peers.sh, nats-server) | | |")
    app_cpu = median_of(raw["append"], "per_cpu_s")
    L.append(f"| outbox appends (real outbox.c, group commits of 500 / 5 ms): wall / per CPU second | "
             f"{fmt(app)} / {fmt(app_cpu)} rec/s | | >= 200,000: {verdict(app >= 200000 if app else None)} |")
    for prog, r in sorted(raw["micro"].items()):
        for f in r["figures"]:
            val = f.get("value", f.get("per_s"))
            L.append(f"| {prog}: {f['name']} | {fmt(val) if isinstance(val, (int, float)) else val} "
                     f"{f.get('unit', '/s')} | | {f.get('target', '')} |")
        if not r["figures"]:
            for line in (r["text"] or [])[:8]:
                L.append(f"| {prog} (rc {r['rc']}) | {line.strip().replace('|', '/')} | | |")
    L.append("")
    L.append("Throughput ratios are medians of per-repetition ratios, each pair measured back to back in this "
             "run (the machine is shared and noisy). Rates: messages / (last message at the far end - load "
             "start). VmRSS counts resident shared-library pages (libcrypto, libsqlite3, ...); RssAnon is the "
             "private part, PSS splits shared pages among the processes using them. Raw numbers: "
             "results.json; plot: results.png; how: tests/bench/README.md.")
    md = "\n".join(L) + "\n"
    (OUT / "results.md").write_text(md)
    (OUT / "results.json").write_text(json.dumps(raw, indent=1, sort_keys=True) + "\n")
    # data for gnuplot: label, msgs/s, steady RSS MiB
    rows = [("ceiling", ceil, None), ("tidegate", tg, tg_rss)]
    if nr is not None:
        rows.append(("Node-RED", nr, nr_rss))
    rows.append(("drain", drain, median_of(raw["backlog"], "rss_steady_mib")))
    with open(OUT / "results.dat", "w") as f:
        for i, (lab, v, rss) in enumerate(rows):
            f.write(f'{i} "{lab}" {v if v is not None else 0:.1f} {rss if rss is not None else "NaN"}\n')
    print(md)


if __name__ == "__main__":
    main()
