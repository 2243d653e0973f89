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
            sit with the sink down, then drain rate and RSS with the sink up; database and
            WAL bytes at the end of the fill and of the drain, database bytes per JSON byte
  upstream  a backlog drained to five sinks at once (lake, kinesalite, s3rver, a cloud
            mosquitto over the MQTT bridge, nats-server JetStream); then the MQTT and NATS
            sinks alone, and their brokers' own ceilings, for the ratio
  micro     outbox appends/s (bench_outbox) and every other build/rel/bench_* program
Each of these is repeated (3x, BENCH_QUICK=1: 1x, smaller counts) and the median reported.
Once per run, with time series sampled on a thread (plotted to results-time.png):
  saturation  20 per-thing mTLS devices at max rate -> tidegate, against the same load into
              the counting subscriber; broker and tidegate RSS, unacknowledged messages
  soak        load at half the ceiling for 10 min (rules, aggregates, lake): RSS and the
              outbox's bytes on disk, flat once warm or not
  dead-sink   lake + a kinesis sink that is refused, at max rate, with a small max_bytes:
              the outbox's bytes on disk against the cap, drops, rows held
Every throughput run reports the outbox WAL's peak (tidegate_outbox_wal_peak_bytes).
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
# BENCH_OUT=dir: results elsewhere (a BENCH_ONLY run of a few rows keeps the committed figures)
if os.environ.get("BENCH_OUT"):
    OUT = Path(os.environ["BENCH_OUT"]).resolve()
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
    # once per run, not per repetition (time series)
    sat_things=20,                          # per-thing mTLS connections (certs/out/things)
    sat_seconds=20 if QUICK else 120,       # saturation: max rate for this long
    sat_ceiling_seconds=6 if QUICK else 60,    # the same load into the counting subscriber (x2 loops)
    sat_warm=10,                            # "warm" RSS: the first sample at t >= this
    soak_seconds=60 if QUICK else 600,      # at half the load-mode ceiling
    soak_interval=2 if QUICK else 5,        # sampling period of the soak
    dead_seconds=30 if QUICK else 180,      # continuous ingest with a refused sink
    dead_max_bytes=(32 if QUICK else 256) << 20,  # [outbox] max_bytes of that run: reached within it
    dead_interval=2,
    shadow_things=1000,                     # shadow updates: things, load connections, seconds
    shadow_conns=4,
    shadow_seconds=5 if QUICK else 15,
)
MIB = 1 << 20

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


class TimeSeries:
    """Samples on its own thread every `interval` s, so a slow /metrics answer does not
    shift the other readings: VmRSS and RssAnon (MiB) of named pids (<name>_rss_mib,
    <name>_anon_mib), sizes in bytes of named files (0 while absent) and chosen /metrics
    values of a daemon. rows: dicts with t = seconds since t0 (the load start)."""

    def __init__(self, interval, pids=None, files=None, http=None, metric_names=()):
        import threading
        self.interval = interval
        self.pids = dict(pids or {})
        self.files = dict(files or {})
        self.http = http
        self.names = list(metric_names)
        self.rows = []
        self.t0 = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _one(self):
        s = {"t": round(time.monotonic() - self.t0, 3)}
        for name, pid in self.pids.items():
            try:
                m = mem_kib(pid)
                s[f"{name}_rss_mib"] = m["VmRSS"] / 1024
                s[f"{name}_anon_mib"] = m.get("RssAnon", 0) / 1024
            except (OSError, KeyError):
                s[f"{name}_rss_mib"] = s[f"{name}_anon_mib"] = None
        for name, path in self.files.items():
            try:
                s[name] = os.stat(path).st_size
            except OSError:
                s[name] = 0
        if self.http and self.names:
            m = metrics(self.http) or {}
            for k in self.names:
                s[k] = m.get(k)
        return s

    def _run(self):
        while not self._stop.is_set():
            self.rows.append(self._one())
            self._stop.wait(self.interval)

    def start(self, t0=None):
        self.t0 = t0 if t0 is not None else time.monotonic()
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=30)
        self.rows.append(self._one())
        return self.rows

    def values(self, key, t_from=0.0, t_to=float("inf")):
        return [s[key] for s in self.rows if t_from <= s["t"] <= t_to and s.get(key) is not None]

    def at(self, key, t, t_to=float("inf")):
        """the first sample of key at or after t (None if there is none before t_to)"""
        xs = self.values(key, t, t_to)
        return xs[0] if xs else None


def outbox_files(data):
    return {"db": data / "outbox.db", "wal": data / "outbox.db-wal", "shm": data / "outbox.db-shm"}


def outbox_stats(db):
    """rows, JSON bytes (sum(length(payload))) and database pages in use of an outbox file,
    read-only; a second reader while the daemon runs would hold back its WAL restarts, so
    only call this on a closed outbox"""
    import sqlite3
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows, json_bytes = con.execute("SELECT count(*), coalesce(sum(length(payload)), 0) FROM outbox").fetchone()
        page_count = con.execute("PRAGMA page_count").fetchone()[0]
        page_size = con.execute("PRAGMA page_size").fetchone()[0]
        free = con.execute("PRAGMA freelist_count").fetchone()[0]
        per_sink = dict(con.execute("SELECT s.name, count(*) FROM outbox o JOIN sinks s ON s.id = o.sink "
                                    "GROUP BY s.name").fetchall())
    finally:
        con.close()
    used = (page_count - free) * page_size
    return dict(rows=rows, json_bytes=json_bytes, db_pages_used_bytes=used, db_file_pages_bytes=page_count * page_size,
                per_sink=per_sink, db_bytes_per_json_byte=(used / json_bytes) if json_bytes else None)


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


def tidegate_conf(d, port, http, lake, data, rules=True, sinks=None, ingest=(), outbox=(), aggregates=False):
    """sinks: lines after [sink lake] (its options, then other sinks); ingest / outbox: lines
    for those sections; aggregates: the shipped rules/aggregates/aggregates.json"""
    rules_dir = REPO / "rules"
    lines = [f"gateway_id = gw-bench", f"data_dir = {data}", "log_level = warn", "[broker]",
             f"port = {port}", f"ca_file = {CERTS}/ca.crt", f"cert_file = {CERTS}/gateway.crt",
             f"key_file = {CERTS}/gateway.key", "subscribe = devices/+/telemetry", "[ingest]"]
    if rules and rules_dir.is_dir() and glob.glob(str(rules_dir / "*.json")):
        lines.append(f"rules_dir = {rules_dir}")
        if (rules_dir / "schemas").is_dir():
            lines.append(f"schemas_dir = {rules_dir / 'schemas'}")
    agg = rules_dir / "aggregates" / "aggregates.json"
    if aggregates and agg.is_file():
        lines.append(f"aggregates_file = {agg}")
    lines += list(ingest)
    if outbox:
        lines += ["[outbox]", *outbox]
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


def lake_lines(lake, table="telemetry", remove=False):
    """records in the lake's table folder, counted as lines without holding them (millions
    after the long runs); remove: then delete the lake (GBs after them) unless BENCH_KEEP"""
    n = 0
    for f in glob.glob(f"{lake}/{table}/**/*", recursive=True):
        if os.path.isfile(f) and (".json" in f):
            with open(f, "rb") as fh:
                while True:
                    chunk = fh.read(1 << 20)
                    if not chunk:
                        break
                    n += chunk.count(b"\n")
    if remove and not KEEP:
        shutil.rmtree(lake, ignore_errors=True)
    return n


def thing_sim_argv(port, d, name, seconds, seed):
    """device_sim per-thing mode: each thing its own mTLS connection with its own
    certificate (certs/out/things, made by run.sh), publishing as fast as PUBACKs allow"""
    return [BIN / "device_sim", "--host", "127.0.0.1", "--port", port, "--cafile", CERTS / "ca.crt",
            "--certs-dir", CERTS / "things", "--things", P["sat_things"], "--max-rate", "--duration", seconds,
            "--qos", "1", "--seed", seed, "--quiet", "--summary-json", d / f"{name}.json"]


def ensure_thing_certs():
    last = CERTS / "things" / f"dev-{P['sat_things']:04d}.crt"
    if not last.exists():  # make-certs.sh keeps the CA and every cert it made before
        subprocess.run([REPO / "certs" / "make-certs.sh", CERTS, "--things", str(P["sat_things"])],
                       check=True, capture_output=True)


def wal_fields(m):
    return dict(wal_peak_bytes=m.get("tidegate_outbox_wal_peak_bytes"), wal_max_bytes=m.get("tidegate_outbox_wal_max_bytes"),
                wal_restarts=m.get("tidegate_outbox_wal_restarts_total"),
                wal_restart_max_s=m.get("tidegate_outbox_wal_restart_max_seconds"))


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
            **wal_fields(m),
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
        m = metrics(http) or {}
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
                    rss_steady_mib=samp.steady_mib(t0, time.monotonic()), **wal_fields(m))
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
        # database bytes per record byte: pages in use / the records' JSON (closed file)
        filled["stats"] = outbox_stats(data / "outbox.db")
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
        # the outbox's files once the drained rows are deleted (the daemon still running)
        try:
            wait_until(lambda: (metrics(http) or {}).get("tidegate_outbox_rows", 1) == 0, 15, "outbox empty", 0.1)
        except TimeoutError:
            pass
        m = metrics(http) or {}
        drained_disk = {k: m.get(f'tidegate_outbox_disk_bytes{{file="{k}"}}') for k in ("db", "wal", "shm", "total")}
        drained_disk.update(db_used_metric=m.get("tidegate_outbox_db_used_bytes"), wal_frames=m.get("tidegate_outbox_wal_bytes"),
                            rows=m.get("tidegate_outbox_rows"))
        tg.stop()
        # pages in use from the closed file: the gauge above is taken at the writer's last
        # commit, and a drain with no ingest commits nothing on the writer
        closed = outbox_stats(data / "outbox.db")
        drained_disk.update(db_used=closed["db_pages_used_bytes"], db_closed=(data / "outbox.db").stat().st_size)
        n = len(lake_records(lake))
        return dict(records=P["backlog"], fill=filled, sit=sit, drained=int(ok), lake_records=n,
                    fill_disk=dict(db=filled.get("open_db_bytes"), wal=filled.get("open_wal_bytes"),
                                   shm=filled.get("open_shm_bytes"), db_closed=filled.get("db_bytes"),
                                   db_used=filled.get("db_used_bytes"), wal_peak=filled.get("wal_peak_bytes")),
                    db_bytes_per_json_byte=filled["stats"]["db_bytes_per_json_byte"],
                    drained_disk=drained_disk, **wal_fields(m),
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


def rss_summary(ts, name, warm, t_end):
    """start (t=0), warm (first sample at t >= warm), end (last sample of the load), max, and
    the growth warm -> max, of <name>_rss_mib over [0, t_end]"""
    xs = ts.values(f"{name}_rss_mib", 0, t_end)
    w = ts.at(f"{name}_rss_mib", warm, t_end)
    return dict(start=xs[0] if xs else None, warm=w, end=xs[-1] if xs else None, max=max(xs) if xs else None,
                growth=(max(xs) - w) if xs and w is not None else None,
                anon_warm=ts.at(f"{name}_anon_mib", warm, t_end),
                anon_max=max(ts.values(f"{name}_anon_mib", 0, t_end) or [0]) or None)


def flat_once_warm(xs_t, tol):
    """xs_t: [(t, v)] after warm. Flat when the largest value of the second half is at most
    tol above the largest of the first half (a sawtooth such as the WAL's is flat; anything
    that keeps growing is not). Also the least-squares slope per minute, for the record."""
    if len(xs_t) < 4:
        return dict(flat=None, slope_per_min=None, first_half_max=None, second_half_max=None)
    mid = xs_t[0][0] + (xs_t[-1][0] - xs_t[0][0]) / 2
    a = [v for t, v in xs_t if t <= mid]
    b = [v for t, v in xs_t if t > mid]
    n = len(xs_t)
    mt = sum(t for t, _ in xs_t) / n
    mv = sum(v for _, v in xs_t) / n
    den = sum((t - mt) ** 2 for t, _ in xs_t)
    slope = sum((t - mt) * (v - mv) for t, v in xs_t) / den * 60 if den else None
    return dict(flat=max(b) - max(a) <= tol, slope_per_min=slope, first_half_max=max(a), second_half_max=max(b),
                tol=tol)


def run_ceiling_things(d, seconds, loop="mosquitto"):
    """The saturation row's ceiling: the same per-thing load (20 mTLS connections at max
    rate for `seconds`) into the counting subscriber, run_ceiling's shape (loop as there);
    the broker's RSS is sampled too, for comparison with the same broker feeding tidegate."""
    d.mkdir(parents=True)
    broker, port = start_broker(d)
    try:
        sub, out = start_sub(d, port, ["devices/#"], 0, "sub", ident="ops", idle=2, timeout=seconds + P["run_timeout"],
                             loop=loop)
        ts = TimeSeries(1.0, pids={"broker": broker.pid})
        bcpu0, sys0 = cpu_seconds(broker.pid), sys_cpu()
        t0 = time.monotonic()
        ts.start(t0)
        sim = Proc(thing_sim_argv(port, d, "sim", seconds, 11), d / "sim.log")
        sim_cpu = sim.wait_cpu(seconds + 60)
        t_load = time.monotonic() - t0
        sub_cpu = sub.wait_cpu(P["run_timeout"])
        rows = ts.stop()
        bcpu1, sys1 = cpu_seconds(broker.pid), sys_cpu()
        s = read_json(out)
        simj = read_json(d / "sim.json")
        rate = s["count"] / (s["last_mono_s"] - t0) if s["count"] else 0
        return dict(msgs_per_s=rate, received=s["count"], sent=simj["sent"], acked=simj["acked"], loop=loop,
                    sim_rate=simj["rate"], seconds=seconds, samples=rows, lat_ms=s["lat_ms"], complete=s["count"] >= simj["acked"] > 0,
                    broker_rss=rss_summary(ts, "broker", P["sat_warm"], t_load),
                    broker_cpu_s_per_1m=(bcpu1 - bcpu0) / max(1, s["count"]) * 1e6,
                    sub_cpu_s_per_1m=sub_cpu / max(1, s["count"]) * 1e6,
                    sim_cpu_s_per_1m=sim_cpu / max(1, s["count"]) * 1e6, machine_busy=busy_frac(sys0, sys1))
    finally:
        stop_all()


SAT_METRICS = ["tidegate_broker_unacked", "tidegate_broker_unacked_oldest_seconds", "tidegate_broker_unacked_max",
               "tidegate_broker_read_throttled_total", "tidegate_messages_received_total",
               "tidegate_broker_stored_messages", "tidegate_broker_dropped_messages", "tidegate_outbox_wal_bytes"]


def run_saturation(d, seconds, ceiling, ceiling_io):
    """Issue 18: 20 per-thing mTLS devices at max rate -> mosquitto -> tidegate (rules,
    outbox, lake). Sampled every second: broker and tidegate RSS, unacknowledged messages.
    End to end: every message acknowledged to a device delivered by the lake sink."""
    d.mkdir(parents=True)
    broker, port = start_broker(d)
    try:
        http = free_port()
        lake = d / "lake"
        conf = tidegate_conf(d, port, http, lake, d / "data")
        tg = start_tidegate(d, conf, http)
        wait_until(lambda: (metrics(http) or {}).get("tidegate_broker_connected") == 1, 15, "tidegate connected")
        time.sleep(0.3)  # SUBSCRIBE follows CONNACK
        ts = TimeSeries(1.0, pids={"broker": broker.pid, "tidegate": tg.pid}, http=http, metric_names=SAT_METRICS)
        cpu0, bcpu0, sys0 = cpu_seconds(tg.pid), cpu_seconds(broker.pid), sys_cpu()
        t0 = time.monotonic()
        ts.start(t0)
        sim = Proc(thing_sim_argv(port, d, "sim", seconds, 13), d / "sim.log")
        sim.wait(seconds + 60)  # device_sim waits up to 30 s for its last PUBACKs
        t_load = time.monotonic() - t0
        simj = read_json(d / "sim.json")
        acked = simj["acked"]
        # the far end: the lake sink's ok counter; stop waiting when it no longer moves (what
        # the broker dropped never arrives: counted below from its $SYS)
        done_t, last_ok, last_change = None, -1, time.monotonic()
        deadline = time.monotonic() + P["run_timeout"]
        while time.monotonic() < deadline:
            m = metrics(http)
            now = time.monotonic()
            if all_delivered(m, acked):
                done_t = now
                break
            ok = sink_ok(m)
            if ok != last_ok:
                last_ok, last_change = ok, now
            elif now - last_change > 15:
                break
            time.sleep(0.05)
        cpu1, bcpu1, sys1 = cpu_seconds(tg.pid), cpu_seconds(broker.pid), sys_cpu()
        rows = ts.stop()
        m = metrics(http) or {}
        tg.stop()
        # telemetry records in the lake (the sink's ok count also has the rules' alert rows)
        delivered = lake_lines(lake, remove=True)
        unacked = ts.values("tidegate_broker_unacked", 0, t_load)
        span = (done_t if done_t else last_change) - t0
        rate = (acked if done_t else min(acked, delivered)) / span if span > 0 else 0
        return dict(
            seconds=seconds, things=P["sat_things"], sent=simj["sent"], acked=acked, sim_rate=simj["rate"],
            delivered=delivered, lake_rows_ok=int(sink_ok(m)), t_load_s=t_load,
            complete=done_t is not None and delivered >= acked,
            msgs_per_s=rate, ceiling_msgs_per_s=ceiling.get("msgs_per_s"),
            ratio=rate / ceiling["msgs_per_s"] if ceiling.get("msgs_per_s") else None,
            ratio_io=rate / ceiling_io["msgs_per_s"] if ceiling_io.get("msgs_per_s") else None,
            broker_rss=rss_summary(ts, "broker", P["sat_warm"], t_load),
            tidegate_rss=rss_summary(ts, "tidegate", P["sat_warm"], t_load),
            unacked_max=max(unacked) if unacked else None, unacked_p99=pct(unacked, 0.99),
            unacked_p50=pct(unacked, 0.5), unacked_bound=m.get("tidegate_broker_unacked_max"),
            unacked_oldest_max_s=max(ts.values("tidegate_broker_unacked_oldest_seconds", 0, t_load) or [0]),
            read_throttled=m.get("tidegate_broker_read_throttled_total"),
            broker_dropped=m.get("tidegate_broker_dropped_messages"),
            broker_stored_max=max(ts.values("tidegate_broker_stored_messages", 0, t_load) or [-1]),
            cpu_s_per_1m=(cpu1 - cpu0) / max(1, delivered) * 1e6,
            broker_cpu_s_per_1m=(bcpu1 - bcpu0) / max(1, delivered) * 1e6, machine_busy=busy_frac(sys0, sys1),
            **wal_fields(m), samples=rows)
    finally:
        stop_all()


def run_soak(d, rate, seconds):
    """Issue 21 in normal operation: load mode at `rate` msg/s in total for `seconds`, the
    shipped rules and aggregates, the lake sink delivering. Sampled every soak_interval:
    tidegate's (and the broker's) RSS and the outbox's three files."""
    d.mkdir(parents=True)
    broker, port = start_broker(d)
    try:
        http = free_port()
        lake, data = d / "lake", d / "data"
        conf = tidegate_conf(d, port, http, lake, data, aggregates=True)
        tg = start_tidegate(d, conf, http)
        wait_until(lambda: (metrics(http) or {}).get("tidegate_broker_connected") == 1, 15, "tidegate connected")
        time.sleep(0.3)
        ts = TimeSeries(P["soak_interval"], pids={"tidegate": tg.pid, "broker": broker.pid}, files=outbox_files(data),
                        http=http, metric_names=["tidegate_outbox_wal_bytes", "tidegate_outbox_rows",
                                                 'tidegate_outbox_disk_bytes{file="total"}',
                                                 "tidegate_broker_unacked"])
        cpu0 = cpu_seconds(tg.pid)
        t0 = time.monotonic()
        ts.start(t0)
        sim = Proc(sim_argv(port, d, "sim", rate=rate / P["things"], duration=seconds), d / "sim.log")
        sim.wait(seconds + 60)
        t_load = time.monotonic() - t0
        simj = read_json(d / "sim.json")
        try:
            wait_until(lambda: all_delivered(metrics(http), simj["acked"]), 60, "lake caught up", 0.1)
            caught_up = True
        except TimeoutError:
            caught_up = False
        cpu1 = cpu_seconds(tg.pid)
        rows = ts.stop()
        m = metrics(http) or {}
        tg.stop()
        for r in rows:
            r["disk"] = r["db"] + r["wal"] + r["shm"]
        warm = max(10.0, seconds / 10)
        after = [(r["t"], r) for r in rows if warm <= r["t"] <= t_load]
        rss_t = [(t, r["tidegate_rss_mib"]) for t, r in after if r.get("tidegate_rss_mib") is not None]
        disk_t = [(t, r["disk"] / MIB) for t, r in after]
        disk = [r["disk"] / MIB for r in rows if r["t"] <= t_load]
        wdisk = [v for t, v in disk_t]
        delivered = lake_lines(lake, remove=True)  # telemetry records; the sink's ok count also has aggregates and alerts
        return dict(
            seconds=seconds, offered_per_s=rate, achieved_per_s=simj["rate"], sent=simj["sent"], acked=simj["acked"],
            delivered=delivered, lake_rows_ok=int(sink_ok(m)), complete=caught_up and delivered >= simj["acked"],
            warm_s=warm, interval_s=P["soak_interval"],
            tidegate_rss=rss_summary(ts, "tidegate", warm, t_load), broker_rss=rss_summary(ts, "broker", warm, t_load),
            rss_flat=flat_once_warm(rss_t, 1.0),
            disk_mib=dict(start=disk[0] if disk else None, warm=wdisk[0] if wdisk else None,
                          end=disk[-1] if disk else None, max=max(disk) if disk else None),
            disk_flat=flat_once_warm(disk_t, 8.0),
            wal_file_max_mib=max(r["wal"] for r in rows) / MIB,
            cpu_s_per_1m=(cpu1 - cpu0) / max(1, delivered) * 1e6, **wal_fields(m), samples=rows)
    finally:
        stop_all()


def run_dead_sink(d, seconds, cap):
    """Issue 21 in an outage: default_sinks = lake, dead (kinesis to a closed port on
    127.0.0.1: every request refused), max_bytes = cap with drop_oldest, 20 per-thing devices
    at max rate. Sampled every dead_interval: the outbox's files, WAL, drops, rows."""
    d.mkdir(parents=True)
    broker, port = start_broker(d)
    try:
        http = free_port()
        lake, data = d / "lake", d / "data"
        dead_port = free_port()  # nothing listens there
        sinks = ["[sink dead]", "type = kinesis", "stream = dead", f"endpoint = http://127.0.0.1:{dead_port}",
                 "access_key_id = AKIDEXAMPLE", "secret_access_key = not-a-secret", "timeout = 2s"]
        conf = tidegate_conf(d, port, http, lake, data, rules=False, sinks=sinks,
                             ingest=["default_sinks = lake, dead"],
                             outbox=[f"max_bytes = {cap >> 20}M", "full_policy = drop_oldest"])
        tg = start_tidegate(d, conf, http)
        wait_until(lambda: (metrics(http) or {}).get("tidegate_broker_connected") == 1, 15, "tidegate connected")
        time.sleep(0.3)
        ts = TimeSeries(P["dead_interval"], pids={"tidegate": tg.pid}, files=outbox_files(data), http=http,
                        metric_names=['tidegate_outbox_disk_bytes{file="total"}', "tidegate_outbox_wal_bytes",
                                      "tidegate_outbox_dropped_total", "tidegate_outbox_rows",
                                      "tidegate_messages_accepted_total", "tidegate_outbox_record_cap_bytes"])
        t0 = time.monotonic()
        ts.start(t0)
        sim = Proc(thing_sim_argv(port, d, "sim", seconds, 17), d / "sim.log")
        sim.wait(seconds + 60)
        t_load = time.monotonic() - t0
        simj = read_json(d / "sim.json")
        acked = simj["acked"]
        try:
            wait_until(lambda: (lambda m: m.get("tidegate_messages_accepted_total", 0) >= acked and
                                sink_ok(m) >= acked)(metrics(http) or {}), 60, "accepted and in the lake", 0.1)
            caught_up = True
        except TimeoutError:
            caught_up = False
        rows = ts.stop()
        m = metrics(http) or {}
        wal_bound = m.get("tidegate_outbox_wal_max_bytes")
        tg.stop()
        st = outbox_stats(data / "outbox.db")
        for r in rows:
            r["disk"] = r["db"] + r["wal"] + r["shm"]
        accepted = m.get("tidegate_messages_accepted_total", 0)
        dropped = m.get("tidegate_outbox_dropped_total", 0)
        held = st["per_sink"].get("dead", 0)
        first_drop = next((r["t"] for r in rows if (r.get("tidegate_outbox_dropped_total") or 0) > 0), None)
        delivered = lake_lines(lake, remove=True)
        return dict(
            seconds=seconds, cap_bytes=cap, sent=simj["sent"], acked=acked, sim_rate=simj["rate"],
            accepted=accepted, dropped=dropped, held_dead=held, held_lake=st["per_sink"].get("lake", 0),
            accounted=held + dropped == accepted, lake_delivered=delivered, lake_rows_ok=int(sink_ok(m)),
            complete=caught_up and delivered >= acked, t_load_s=t_load, first_drop_s=first_drop,
            disk_max_bytes=max(r["disk"] for r in rows),
            disk_metric_max_bytes=max(ts.values('tidegate_outbox_disk_bytes{file="total"}') or [0]),
            wal_file_max_bytes=max(r["wal"] for r in rows), wal_bound_bytes=wal_bound,
            record_cap_bytes=m.get("tidegate_outbox_record_cap_bytes"),
            db_bytes_per_json_byte=st["db_bytes_per_json_byte"], json_bytes=st["json_bytes"],
            **wal_fields(m), samples=rows)
    finally:
        stop_all()


def run_shadow(d):
    """Device Shadow updates through the broker (mTLS, QoS 1) for shadow_things things, by
    tests/bench/bench_shadow.c: first as fast as the answers come back (a window of unanswered
    updates per connection), then open loop at half that rate for the round trip update ->
    /accepted (p50 / p99). The daemon runs with its defaults (shadows on, responses QoS 1,
    every change also a record for the lake sink)."""
    d.mkdir(parents=True)
    broker, port = start_broker(d)
    try:
        http = free_port()
        conf = tidegate_conf(d, port, http, d / "lake", d / "data", rules=False)
        tg = start_tidegate(d, conf, http)
        wait_until(lambda: (metrics(http) or {}).get("tidegate_broker_connected") == 1, 15, "tidegate connected")
        time.sleep(0.3)  # SUBSCRIBE follows CONNACK
        base = [BIN / "bench_shadow", "--port", port, "--cafile", CERTS / "ca.crt", "--cert", CERTS / "loadgen.crt",
                "--key", CERTS / "loadgen.key", "--things", P["shadow_things"], "--connections", P["shadow_conns"],
                "--duration", P["shadow_seconds"], "--warmup", 2]

        def one(args, name):
            cpu0, bcpu0, sys0 = cpu_seconds(tg.pid), cpu_seconds(broker.pid), sys_cpu()
            r = subprocess.run([str(a) for a in base + args], capture_output=True, text=True,
                               timeout=P["shadow_seconds"] + 60)
            cpu1, bcpu1, sys1 = cpu_seconds(tg.pid), cpu_seconds(broker.pid), sys_cpu()
            (d / f"{name}.log").write_text(r.stdout + r.stderr)
            res = json.loads(r.stdout.strip().splitlines()[-1])
            n = max(1, res["accepted"])
            res.update(rc=r.returncode, tidegate_cpu_s_per_1m=(cpu1 - cpu0) / n * 1e6,
                       broker_cpu_s_per_1m=(bcpu1 - bcpu0) / n * 1e6, machine_busy=busy_frac(sys0, sys1))
            return res
        mx = one(["--max-rate", "--inflight", 256], "shadow-max")
        half = one(["--rate", f"{0.5 * mx['updates_per_s']:.0f}"], "shadow-half")
        m = metrics(http) or {}
        return dict(max=mx, half=half, shadows=m.get("tidegate_shadows"),
                    rejected_429=m.get('tidegate_shadow_rejected_total{code="429"}'),
                    records=m.get("tidegate_shadow_records_total"), commits=m.get("tidegate_outbox_commits_total"))
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
    mine = {"bench_sub", "bench_outbox", "bench_shadow", "bench_nats", "bench_fleet"}
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

# ---- the operator's console (issue 15) ------------------------------------------------------
# Three end-to-end runs with the console on ([http] token_file), same load as run_tidegate:
#   console    retention at its default (24 h), nobody watching
#   watched    the same with the page open: one event-stream client reading /api/events and an
#              API poll every second (devices, sinks, alerts, rules, status, one series), as the
#              page does
#   noret      retention off ([retention] period = 0), nobody watching
# watched / console must stay >= 0.95; console / noret (the retention's cost) >= 0.90.

def metrics_tok(http, token):
    req = urllib.request.Request(f"http://127.0.0.1:{http}/metrics", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=2) as r:
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


def console_watcher(http, token, stop, stats):
    """the page's load: an event-stream reader plus one round of API calls per second"""
    import threading

    def sse():
        s = socket.create_connection(("127.0.0.1", http), timeout=2)
        s.sendall(f"GET /api/events HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
        while not stop.is_set():
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                break
            stats["sse_frames"] += chunk.count(b"\n\n")
        s.close()

    def poll():
        paths = ["/api/devices", "/api/sinks", "/api/alerts", "/api/rules", "/api/status", "/api/shadows?limit=50",
                 "/api/series?thing=dev-0001&field=temperature&since=-5m&step=10s"]
        while not stop.is_set():
            t0 = time.monotonic()
            for p in paths:
                req = urllib.request.Request(f"http://127.0.0.1:{http}{p}", headers={"Authorization": f"Bearer {token}"})
                try:
                    with urllib.request.urlopen(req, timeout=5) as r:
                        r.read()
                        stats["api_ok"] += 1
                except OSError:
                    stats["api_err"] += 1
            stats["poll_s"].append(time.monotonic() - t0)
            stop.wait(max(0.0, 1.0 - (time.monotonic() - t0)))

    ts = [threading.Thread(target=sse, daemon=True), threading.Thread(target=poll, daemon=True)]
    for t in ts:
        t.start()
    return ts


def run_console(d, mode):
    import threading
    d.mkdir(parents=True)
    broker, port = start_broker(d)
    stop = threading.Event()
    try:
        http = free_port()
        token_file = d / "api-token"
        subprocess.run([BIN / "tidegate", "token", "new", token_file], check=True, capture_output=True)
        token = token_file.read_text().strip()
        conf = tidegate_conf(d, port, http, d / "lake", d / "data")
        text = conf.read_text().replace("[http]\n", f"[http]\ntoken_file = {token_file}\n")
        if mode == "noret":
            text += "[retention]\nperiod = 0\n"
        conf.write_text(text)
        tg = Proc([BIN / "tidegate", "run", "-c", conf], d / "tidegate.log")
        wait_until(lambda: (metrics_tok(http, token) or {}).get("tidegate_broker_connected") == 1 or not tg.alive(), 15,
                   "tidegate connected")
        time.sleep(0.3)  # SUBSCRIBE follows CONNACK
        stats = dict(sse_frames=0, api_ok=0, api_err=0, poll_s=[])
        watchers = console_watcher(http, token, stop, stats) if mode == "watched" else []
        cpu0 = cpu_seconds(tg.pid)
        t0 = time.monotonic()
        sim = Proc(sim_argv(port, d, "sim", msgs=P["msgs"]), d / "sim.log")
        done_t, last_ok = None, 0
        while time.monotonic() < t0 + P["run_timeout"]:
            m = metrics_tok(http, token)
            last_ok = sink_ok(m)
            if all_delivered(m, P["msgs"]):
                done_t = time.monotonic()
                break
            time.sleep(0.05)
        cpu1 = cpu_seconds(tg.pid)
        stop.set()
        for t in watchers:
            t.join(10)
        m = metrics_tok(http, token) or {}
        sim.wait(30)
        tg.stop()
        return dict(mode=mode, complete=done_t is not None,
                    msgs_per_s=(P["msgs"] / (done_t - t0)) if done_t else last_ok / (time.monotonic() - t0),
                    cpu_s_per_1m=(cpu1 - cpu0) / max(1, last_ok) * 1e6,
                    retention_rows=m.get("tidegate_retention_rows"),
                    retention_disk_bytes=m.get("tidegate_retention_disk_bytes"),
                    api_requests=m.get("tidegate_api_requests_total"), sse_frames=stats["sse_frames"],
                    api_ok=stats["api_ok"], api_err=stats["api_err"],
                    poll_p50_ms=1000 * statistics.median(stats["poll_s"]) if stats["poll_s"] else None)
    finally:
        stop.set()
        stop_all()


def run_console_reps(work, rep):
    """one repetition of the three console runs, back to back"""
    return {mode: run_console(work / f"console-{mode}-{rep}", mode) for mode in ("console", "watched", "noret")}


def console_rows(raw):
    reps = raw.get("console", [])
    if not reps:
        return []
    med = lambda xs: statistics.median(xs) if xs else None
    watched = med([r["watched"]["msgs_per_s"] / r["console"]["msgs_per_s"] for r in reps if r["console"]["msgs_per_s"]])
    ret = med([r["console"]["msgs_per_s"] / r["noret"]["msgs_per_s"] for r in reps if r["noret"]["msgs_per_s"]])
    rate = lambda k: med([r[k]["msgs_per_s"] for r in reps])
    verdict = lambda ok: "n/a" if ok is None else ("met" if ok else "**missed**")
    return [
        f"| console on ([http] token_file), retention 24 h (default), nobody watching | {fmt(rate('console'))} msg/s | 1.00 | |",
        f"| same with the page open: one event-stream client + an API poll per second "
        f"({fmt(med([r['watched']['api_ok'] for r in reps]))} API calls, {fmt(med([r['watched']['sse_frames'] for r in reps]))} events) "
        f"| {fmt(rate('watched'))} msg/s | {fmt(watched, 3)} | >= 0.95: {verdict(watched >= 0.95 if watched else None)} |",
        f"| console on, retention off ([retention] period = 0) | {fmt(rate('noret'))} msg/s | with retention "
        f"{fmt(ret, 3)} of it | >= 0.90: {verdict(ret >= 0.90 if ret else None)} |",
    ]



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
               ceiling=[], ceiling_io=[], tidegate=[], latency=[], latency_half_tg=[], node_red=[], backlog=[], upstream=[], append=[], micro={},
               saturation_ceiling=None, saturation_ceiling_io=None, saturation=None, soak=None, dead_sink=None, shadow=[])
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
        if wanted("console"):
            log(f"rep {rep + 1}: console (idle / page open / retention off)")
            raw.setdefault("console", []).append(run_console_reps(work, rep))
            log("  console " + ", ".join(f"{k} {v['msgs_per_s']:.0f} msg/s" for k, v in raw["console"][-1].items()))
        if wanted("append"):
            log(f"rep {rep + 1}: outbox append")
            raw["append"].append(run_append(work / f"append-{rep}"))
        if wanted("shadow"):
            log(f"rep {rep + 1}: shadow updates, {P['shadow_things']} things")
            raw["shadow"].append(run_shadow(work / f"shadow-{rep}"))
            log(f"  shadow {raw['shadow'][-1]['max']['updates_per_s']:.0f} updates/s; at half: p50 "
                f"{raw['shadow'][-1]['half']['p50_ms']:.1f} ms, p99 {raw['shadow'][-1]['half']['p99_ms']:.1f} ms")
    # once per run: the long rows with time series
    if wanted("saturation"):
        ensure_thing_certs()
        log(f"saturation: {P['sat_things']} per-thing connections at max rate, ceiling first "
            f"({P['sat_ceiling_seconds']} s)")
        raw["saturation_ceiling"] = run_ceiling_things(work / "saturation-ceiling", P["sat_ceiling_seconds"])
        raw["saturation_ceiling_io"] = run_ceiling_things(work / "saturation-ceiling-io", P["sat_ceiling_seconds"],
                                                          loop="mqtt_io")
        log(f"  per-thing ceiling {raw['saturation_ceiling']['msgs_per_s']:.0f} msg/s, subscriber on tidegate's loop "
            f"{raw['saturation_ceiling_io']['msgs_per_s']:.0f} msg/s; tidegate for {P['sat_seconds']} s")
        raw["saturation"] = run_saturation(work / "saturation", P["sat_seconds"], raw["saturation_ceiling"],
                                           raw["saturation_ceiling_io"])
        sat = raw["saturation"]
        log(f"  tidegate {sat['msgs_per_s']:.0f} msg/s, unacked max {sat['unacked_max']}, broker RSS "
            f"{sat['broker_rss']['warm']} -> max {sat['broker_rss']['max']} MiB")
    if wanted("soak"):
        ceil = median_of(raw["ceiling"], "msgs_per_s")
        if not ceil:  # BENCH_ONLY without ceiling: measure it here
            log("soak: measuring the load-mode ceiling first")
            ceil = run_ceiling(work / "soak-ceiling")["msgs_per_s"]
        log(f"soak: {P['soak_seconds']} s at half the ceiling ({0.5 * ceil:.0f} msg/s)")
        raw["soak"] = run_soak(work / "soak", 0.5 * ceil, P["soak_seconds"])
        sk = raw["soak"]
        log(f"  tidegate RSS {sk['tidegate_rss']['warm']} -> {sk['tidegate_rss']['end']} MiB, disk "
            f"{sk['disk_mib']['warm']} -> {sk['disk_mib']['end']} MiB")
    if wanted("dead-sink"):
        ensure_thing_certs()
        log(f"dead sink: max rate for {P['dead_seconds']} s, max_bytes {P['dead_max_bytes'] >> 20} MiB")
        raw["dead_sink"] = run_dead_sink(work / "dead-sink", P["dead_seconds"], P["dead_max_bytes"])
        ds = raw["dead_sink"]
        log(f"  disk max {ds['disk_max_bytes'] / MIB:.1f} MiB (cap {ds['cap_bytes'] >> 20}), dropped {ds['dropped']:.0f}")
    if wanted("micro"):
        log("micro benchmarks of the other modules")
        raw["micro"] = run_micro_others(work)
    raw["elapsed_s"] = time.monotonic() - t_start
    write_results(raw)
    record_history(raw)
    if not KEEP:
        shutil.rmtree(work, ignore_errors=True)
    else:
        log(f"kept {work}")
    log(f"done in {raw['elapsed_s']:.0f} s")


def record_history(raw):
    """issue 19: one row per run in bench/results/history.tsv (tests/bench/history.py) with the
    median end-to-end ratio to the ceiling of the repetitions (each pair back to back), the
    daemon's CPU per 1M messages and its steady RSS; kind "full" or "quick"."""
    if not (raw["ceiling"] and raw["tidegate"]) or ONLY:
        return
    import history
    pairs = [(c["msgs_per_s"], t["msgs_per_s"]) for c, t in zip(raw["ceiling"], raw["tidegate"])
             if c.get("msgs_per_s") and t.get("msgs_per_s")]
    if not pairs:
        return
    ceil, tg = sorted(pairs, key=lambda p: p[1] / p[0])[len(pairs) // 2]  # the median ratio's pair
    busy = median_of(raw["tidegate"], "machine_busy")
    history.append("quick" if QUICK else "full", ceil, tg, median_of(raw["tidegate"], "cpu_s_per_1m"),
                   median_of(raw["tidegate"], "rss_steady_mib"), busy)
    log(f"history: appended a {'quick' if QUICK else 'full'} row to {history.HISTORY}")


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
    # the rows whose messages were not all counted at the far end, named in the header (the
    # broker-only ceilings of the per-thing load lose messages to a slow counting subscriber)
    incomplete = [k for k in ("ceiling", "ceiling_io", "tidegate", "backlog", "upstream")
                  if any(not r.get("complete") for r in raw.get(k, []))]
    incomplete += [k for k in ("saturation_ceiling", "saturation_ceiling_io", "saturation", "soak", "dead_sink")
                   if raw.get(k) and not raw[k].get("complete")]
    complete = not incomplete
    reps = raw["params"]["reps"]
    L = []
    L.append(f"# tidegate benchmark ({'BENCH_QUICK' if raw['quick'] else 'full'} run)\n")
    L.append(f"{raw['started'][:19]}Z, commit {raw['git']}, {raw['host']['nproc']} cores, "
             f"median of {reps} repetition{'s' if reps > 1 else ''}, took {raw['elapsed_s']:.0f} s. "
             f"Load: device_sim, {raw['params']['conns']} mTLS connections, {raw['params']['things']} things, "
             f"QoS 1, ~150-byte JSON, {raw['params']['msgs']:,} messages per run; everything on 127.0.0.1. "
             f"All messages accounted for: {'yes' if complete else '**no**: ' + ', '.join(incomplete) + ' (see results.json)'}.\n")
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
    L += backlog_disk_lines(raw, verdict)
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
    L += once_lines(raw, verdict)
    L += wal_peak_lines(raw, verdict)
    L.extend(console_rows(raw))
    app_cpu = median_of(raw["append"], "per_cpu_s")
    L.append(f"| outbox appends (real outbox.c, group commits of 500 / 5 ms): wall / per CPU second | "
             f"{fmt(app)} / {fmt(app_cpu)} rec/s | | >= 200,000: {verdict(app >= 200000 if app else None)} |")
    sh = raw.get("shadow") or []
    if sh:
        sh_max = median_of(sh, "max", "updates_per_s")
        sh_p99 = median_of(sh, "half", "p99_ms")
        L.append(f"| shadow updates, {raw['params']['shadow_things']:,} things, mTLS QoS 1, as fast as answered "
                 f"(update -> /accepted, with /documents and the lake record) | {fmt(sh_max)} updates/s | "
                 f"{fmt(ratio(sh_max, ceil), 2)} of ceiling | >= 10,000: {verdict(sh_max >= 10000 if sh_max else None)} |")
        L.append(f"| shadow round trip update -> /accepted at half that ({fmt(median_of(sh, 'half', 'rate_offered'))} "
                 f"updates/s) p50 / p99 | {fmt(median_of(sh, 'half', 'p50_ms'), 1)} / {fmt(sh_p99, 1)} ms | | "
                 f"p99 <= 20 ms: {verdict(sh_p99 <= 20 if sh_p99 is not None else None)} |")
        L.append(f"| shadow updates: tidegate / broker CPU per 1M (max rate) | "
                 f"{fmt(median_of(sh, 'max', 'tidegate_cpu_s_per_1m'), 1)} / {fmt(median_of(sh, 'max', 'broker_cpu_s_per_1m'), 1)} s | | |")
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
             "results.json; plots: results.png, and results-time.png for the time series (saturation, soak, "
             "dead sink); how: tests/bench/README.md.")
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
    write_time_series(raw)
    print(md)


def mib(v, nd=1):
    return fmt(v / MIB if isinstance(v, (int, float)) and v >= 0 else None, nd)


def backlog_disk_lines(raw, verdict):
    """the 1M-backlog row's outbox on disk: after the fill, after the drain, bytes per record"""
    b = raw["backlog"]
    if not b:
        return []
    per = median_of(b, "db_bytes_per_json_byte")
    return [
        f"| backlog of {raw['params']['backlog']:,}: outbox database / WAL files at the end of the fill (bench_outbox, "
        f"before close); at the end of the drain (daemon running, rows deleted): database (pages in use; the file "
        f"once the daemon stopped) / WAL | "
        f"{mib(median_of(b, 'fill_disk', 'db'))} / {mib(median_of(b, 'fill_disk', 'wal'))} MiB; "
        f"{mib(median_of(b, 'drained_disk', 'db'))} ({mib(median_of(b, 'drained_disk', 'db_used'))}; "
        f"{mib(median_of(b, 'drained_disk', 'db_closed'))}) / {mib(median_of(b, 'drained_disk', 'wal'))} MiB | | |",
        f"| backlog: database bytes per record byte (pages in use / sum(length(payload)), "
        f"{mib(median_of(b, 'fill', 'stats', 'json_bytes'))} MiB of JSON) | {fmt(per, 2)} | | <= 2.5: "
        f"{verdict(per <= 2.5 if per is not None else None)} |"]


def once_lines(raw, verdict):
    L = []
    sat, sc, sio = raw.get("saturation"), raw.get("saturation_ceiling"), raw.get("saturation_ceiling_io")
    if sc:
        L.append(f"| saturation ceiling: {raw['params']['sat_things']} per-thing mTLS devices at max rate for "
                 f"{sc['seconds']} s -> mosquitto -> counting subscriber | {fmt(sc['msgs_per_s'])} msg/s | 1.00 | |")
    if sio:
        L.append(f"| for comparison: the same with the counting subscriber on tidegate's network loop (mqtt_io) | "
                 f"{fmt(sio['msgs_per_s'])} msg/s | | |")
    if sat:
        br, tr = sat["broker_rss"], sat["tidegate_rss"]
        L.append(f"| saturation: the same load for {sat['seconds']} s -> tidegate (rules, outbox, lake), counted at "
                 f"the sink | {fmt(sat['msgs_per_s'])} msg/s ({fmt(sat['delivered'])} of {fmt(sat['acked'])} acknowledged "
                 f"to devices) | {fmt(sat['ratio'], 2)} of the per-thing ceiling; {fmt(sat.get('ratio_io'), 2)} of the "
                 f"mqtt_io one | nothing lost: "
                 f"{verdict(sat['delivered'] >= sat['acked'])} |")
        L.append(f"| saturation: RSS at t={raw['params']['sat_warm']} s / max (1 s samples): broker; tidegate | "
                 f"{fmt(br['warm'], 1)} / {fmt(br['max'], 1)} MiB; {fmt(tr['warm'], 1)} / {fmt(tr['max'], 1)} MiB | "
                 f"broker feeding the counting subscriber instead: max {fmt(sc['broker_rss']['max'] if sc else None, 1)} MiB "
                 f"in {fmt(sc['seconds'] if sc else None)} s | growth after warm < 16 MiB broker, < 6 MiB "
                 f"tidegate: {verdict(br['growth'] < 16 and tr['growth'] < 6 if br['growth'] is not None and tr['growth'] is not None else None)} |")
        ub = sat["unacked_bound"]
        L.append(f"| saturation: messages received, not yet acknowledged to the broker (tidegate_broker_unacked, 1 s "
                 f"samples) max / p99; oldest max | {fmt(sat['unacked_max'])} / {fmt(sat['unacked_p99'])}; "
                 f"{fmt(sat['unacked_oldest_max_s'], 3)} s | bound {fmt(ub)} | <= bound: "
                 f"{verdict(sat['unacked_max'] <= ub if sat['unacked_max'] is not None and ub else None)} |")
        L.append(f"| saturation: reads throttled at the bound; broker $SYS dropped messages (-1 unknown); broker stored "
                 f"max | {fmt(sat['read_throttled'])}; {fmt(sat['broker_dropped'])}; {fmt(sat['broker_stored_max'])} | | |")
    sk = raw.get("soak")
    if sk:
        r, dm, rf, df = sk["tidegate_rss"], sk["disk_mib"], sk["rss_flat"], sk["disk_flat"]
        L.append(f"| soak: {fmt(sk['seconds'])} s at half the ceiling ({fmt(sk['offered_per_s'])} msg/s offered, "
                 f"{fmt(sk['achieved_per_s'])} sent; rules, aggregates, lake): tidegate RSS start / warm (t={fmt(sk['warm_s'])} s)"
                 f" / end / max | {fmt(r['start'], 1)} / {fmt(r['warm'], 1)} / {fmt(r['end'], 1)} / {fmt(r['max'], 1)} MiB | "
                 f"slope after warm {fmt(rf['slope_per_min'], 2)} MiB/min | flat once warm (+1 MiB): {verdict(rf['flat'])} |")
        L.append(f"| soak: outbox on disk (database + WAL + shm) start / warm / end / max | {fmt(dm['start'], 1)} / "
                 f"{fmt(dm['warm'], 1)} / {fmt(dm['end'], 1)} / {fmt(dm['max'], 1)} MiB | slope after warm "
                 f"{fmt(df['slope_per_min'], 2)} MiB/min | flat once warm (+8 MiB): {verdict(df['flat'])} |")
        L.append(f"| soak: delivered to the lake / acknowledged to devices | {fmt(sk['delivered'])} / {fmt(sk['acked'])} | | "
                 f"nothing lost: {verdict(sk['delivered'] >= sk['acked'])} |")
    ds = raw.get("dead_sink")
    if ds:
        cap = ds["cap_bytes"]
        L.append(f"| dead sink: lake + a refused kinesis sink, max_bytes {cap >> 20} MiB (drop_oldest), "
                 f"{raw['params']['sat_things']} per-thing devices at max rate for {ds['seconds']} s "
                 f"({fmt(ds['sim_rate'])} msg/s): outbox on disk max (files, 2 s samples) / cap | "
                 f"{mib(ds['disk_max_bytes'])} / {mib(cap, 0)} MiB | "
                 f"{'cap reached at t=' + fmt(ds['first_drop_s']) + ' s' if ds['first_drop_s'] is not None else '**cap not reached** in the run'} | "
                 f"<= cap: {verdict(ds['disk_max_bytes'] <= cap)} |")
        L.append(f"| dead sink: accepted = held for the dead sink + dropped | {fmt(ds['accepted'])} = {fmt(ds['held_dead'])} + "
                 f"{fmt(ds['dropped'])} | WAL max {mib(ds['wal_file_max_bytes'])} / bound {mib(ds['wal_bound_bytes'], 0)} MiB; "
                 f"database {fmt(ds['db_bytes_per_json_byte'], 2)} bytes per record byte | every row counted: "
                 f"{verdict(ds['accounted'])} |")
        L.append(f"| dead sink: delivered to the lake / acknowledged to devices | {fmt(ds['lake_delivered'])} / "
                 f"{fmt(ds['acked'])} | | nothing lost: {verdict(ds['lake_delivered'] >= ds['acked'])} |")
    return L


def wal_peak_lines(raw, verdict):
    """every throughput run's WAL peak (tidegate_outbox_wal_peak_bytes) against its bound"""
    runs = [("tidegate", raw["tidegate"]), ("latency at 50 % of ceiling", raw["latency"]),
            ("latency at 50 % of tidegate", raw["latency_half_tg"]),
            ("backlog fill (bench_outbox)", [r["fill"] for r in raw["backlog"]]),
            ("backlog sit + drain", raw["backlog"]), ("three-sink drain", raw["upstream"]),
            ("append (bench_outbox)", raw["append"])]
    runs += [(lab, [raw[k]]) for lab, k in (("saturation", "saturation"), ("soak", "soak"), ("dead sink", "dead_sink"))
             if raw.get(k)]
    names, vals, ok = [], [], []
    for lab, rs in runs:
        peak = median_of(rs, "wal_peak_bytes")
        if peak is None:
            continue
        names.append(lab)
        vals.append(mib(peak))
        ok += [r["wal_peak_bytes"] <= r["wal_max_bytes"] for r in rs
               if isinstance(r.get("wal_peak_bytes"), (int, float)) and r.get("wal_max_bytes")]
    if not names:
        return []
    bounds = sorted({r.get("wal_max_bytes") for _, rs in runs for r in rs if r.get("wal_max_bytes")})
    return [f"| outbox WAL peak (tidegate_outbox_wal_peak_bytes): {' / '.join(names)} | {' / '.join(vals)} MiB | "
            f"bound (wal_max_bytes) {' or '.join(mib(b, 0) for b in bounds)} MiB | <= bound: "
            f"{verdict(all(ok) if ok else None)} |"]


TIME_FILES = ("time-saturation.dat", "time-saturation-ceiling.dat", "time-soak.dat", "time-dead.dat")


def write_time_series(raw):
    """results-time.png's data (tests/bench/plot-time.gp); a file only for the rows run"""
    for f in TIME_FILES:
        (OUT / f).unlink(missing_ok=True)
    num = lambda v, scale=1.0: f"{v / scale:.3f}" if isinstance(v, (int, float)) else "NaN"
    if raw.get("saturation"):
        with open(OUT / "time-saturation.dat", "w") as f:
            f.write("# t_s broker_rss_mib tidegate_rss_mib unacked\n")
            for r in raw["saturation"]["samples"]:
                f.write(f"{r['t']:.1f} {num(r.get('broker_rss_mib'))} {num(r.get('tidegate_rss_mib'))} "
                        f"{num(r.get('tidegate_broker_unacked'))}\n")
    if raw.get("saturation_ceiling"):  # the broker feeding the counting subscriber, same load
        with open(OUT / "time-saturation-ceiling.dat", "w") as f:
            f.write("# t_s broker_rss_mib\n")
            for r in raw["saturation_ceiling"]["samples"]:
                f.write(f"{r['t']:.1f} {num(r.get('broker_rss_mib'))}\n")
    if raw.get("soak"):
        with open(OUT / "time-soak.dat", "w") as f:
            f.write("# t_s tidegate_rss_mib disk_mib wal_mib\n")
            for r in raw["soak"]["samples"]:
                f.write(f"{r['t']:.1f} {num(r.get('tidegate_rss_mib'))} {num(r['disk'], MIB)} {num(r['wal'], MIB)}\n")
    if raw.get("dead_sink"):
        ds = raw["dead_sink"]
        with open(OUT / "time-dead.dat", "w") as f:
            f.write("# t_s disk_mib wal_mib cap_mib wal_bound_mib dropped\n")
            for r in ds["samples"]:
                f.write(f"{r['t']:.1f} {num(r['disk'], MIB)} {num(r['wal'], MIB)} {num(ds['cap_bytes'], MIB)} "
                        f"{num(ds['wal_bound_bytes'], MIB)} {num(r.get('tidegate_outbox_dropped_total'))}\n")


if __name__ == "__main__":
    main()
