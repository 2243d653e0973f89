"""chaos.py — `make chaos` (issue 20): the whole stack under load, a seeded schedule of faults,
every sink read back with real clients, and a results table.

The stack, all on free 127.0.0.1 ports, in one work folder:
  mosquitto with the product's mTLS config and the tidegate auth plugin (every device
  registered with its own certificate); the tidegate daemon (under libfaketime, so
  its wall clock can be stepped; the monotonic clock is left alone) with three sinks: the
  lake folder, Kinesis (kinesalite with leveldb persistence) and S3 (s3rver), each upstream
  behind a TCP proxy of ours (ChaosProxy) that can refuse, black-hole or throttle it; the
  daemon's data_dir on a size-limited tmpfs; device_sim with per-device certificates at QoS 1,
  logging every message the broker acknowledged (--acked-log).

Faults, one phase each, in this order (timings drawn from the seed):
  daemon_kill9 (several), broker_stop (SIGTERM, start), broker_kill9, uplink_outage (kinesalite
  and s3rver stopped and restarted; their proxies refuse meanwhile, as the stopped port
  would), uplink_blackhole (the proxies accept and never answer; a daemon stop is timed in
  the middle), uplink_slow (the proxies pass 4 KB/s), disk_full (a ballast file fills the
  tmpfs under data_dir), sighup_storm (hundreds of reloads, the rule file rewritten between
  them), clock_jump (the daemon's wall clock stepped back an hour, then forward an hour).

Read back at the end: the lake with DuckDB (tests/chaos/lake_query.mjs), Kinesis and S3 with
boto3 (tests/integration/aws_peers.py). A message is attributed to the phase in which the
broker acknowledged it to the device. Per phase and sink: lost (acknowledged, in no record
of the sink), duplicates under the same msg_id and under a new msg_id, recovery (seconds
from the end of the fault to the sink's first delivery, for sinks the fault stopped).

    python3 tests/chaos/chaos.py [--short] [--seed N] [--out bench/results/chaos]

writes OUT.md and OUT.json. `make chaos` runs the full schedule (about 10 minutes);
tests/integration/test_chaos.py runs --short inside `make check`.
"""
import argparse
import collections
import json
import os
import random
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
import aws_peers  # noqa: E402
import harness  # noqa: E402
from harness import wait_until  # noqa: E402

FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
STREAM = "chaos"
BUCKET = "chaos"
SLOW_BPS = 4096
SINKS = ("lake", "kin", "s3")
RULE_A = {"sql": "SELECT topic(2) AS thing, temperature FROM 'devices/+/telemetry' WHERE temperature > 1000",
          "actions": [{"republish": {"topic": "chaos/${topic(2)}/hot", "qos": 0}}]}
RULE_B = {"sql": "SELECT topic(2) AS thing, humidity FROM 'devices/+/telemetry' WHERE humidity > 1000",
          "actions": [{"republish": {"topic": "chaos/${topic(2)}/wet", "qos": 0}}]}


# ---- a TCP proxy we control ------------------------------------------------------------

class ChaosProxy:
    """127.0.0.1:port -> 127.0.0.1:upstream. Modes: pass; down (the port refuses: the
    listener is closed and open connections cut); blackhole (connections accepted, what
    they send read and dropped, nothing ever answered; connections already open go silent
    too, and stay silent after the black hole ends, as behind a middlebox that dropped its
    state); slow (SLOW_BPS each way)."""

    def __init__(self, upstream_port):
        self.upstream = upstream_port
        self.port = harness.free_port()
        self.mode = "pass"
        self.lock = threading.Lock()
        self.conns = []
        self.lsock = None
        self.stopping = False
        self._listen()
        self.t = threading.Thread(target=self._accept_loop, daemon=True)
        self.t.start()

    def _listen(self):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self.lsock = s

    def set(self, mode):
        with self.lock:
            old, self.mode = self.mode, mode
            if mode == "down" and self.lsock:
                self.lsock.close()
                self.lsock = None
                for c in self.conns:
                    for s in c:
                        try:
                            s.close()
                        except OSError:
                            pass
                self.conns = []
            elif old == "down" and mode != "down":
                self._listen()

    def _accept_loop(self):
        while not self.stopping:
            with self.lock:
                ls = self.lsock
            if ls is None:
                time.sleep(0.02)
                continue
            try:
                r, _, _ = select.select([ls], [], [], 0.05)
                if not r:
                    continue
                c, _ = ls.accept()
            except (OSError, ValueError):
                continue
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        with self.lock:
            mode = self.mode
        if mode == "blackhole":
            with self.lock:
                self.conns.append((c,))
            try:
                while not self.stopping and c.recv(65536):
                    pass
            except OSError:
                pass
            c.close()
            return
        try:
            u = socket.create_connection(("127.0.0.1", self.upstream), timeout=2)
        except OSError:
            c.close()
            return
        with self.lock:
            self.conns.append((c, u))
        peer = {c: u, u: c}
        dead = False
        try:
            while not self.stopping:
                dead = dead or self.mode == "blackhole"
                # a dead connection only drains the client: the upstream's answers and its
                # close never reach it
                r, _, _ = select.select([c] if dead else [c, u], [], [], 0.2)
                for s in r:
                    slow = self.mode == "slow"
                    data = s.recv(512 if slow else 65536)
                    if not data:
                        raise OSError("closed")
                    if not dead:
                        peer[s].sendall(data)
                    if slow:
                        time.sleep(len(data) / SLOW_BPS)
        except OSError:
            pass
        for s in (c, u):
            try:
                s.close()
            except OSError:
                pass

    def close(self):
        self.stopping = True
        self.set("down")


# ---- samples of the daemon -------------------------------------------------------------

def sink_up(m, sink):
    """tidegate_sink_up of one sink from a metrics dict (its labels also carry the type)."""
    pre = f'tidegate_sink_up{{sink="{sink}",'
    for k, v in m.items():
        if k.startswith(pre):
            return v
    return None


class Poller:
    """Every 100 ms: the daemon's pid, RSS and the /metrics values the table needs."""

    KEYS = [f'tidegate_sink_records_total{{sink="{s}",outcome="ok"}}' for s in SINKS] + \
        ["tidegate_messages_accepted_total", "tidegate_outbox_rows", "tidegate_broker_connected",
         "tidegate_outbox_disk_full"]

    def __init__(self, stack):
        self.stack = stack
        self.samples = []
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop_ev.is_set():
            d = self.stack.daemon
            pid = d.proc.p.pid if d.proc and d.proc.alive() else None
            m = d.metrics() if pid else {}
            s = {"t": time.monotonic(), "pid": pid, "rss_mb": harness.rss_mb(pid) if pid else None}
            for k in self.KEYS:
                s[k] = m.get(k)
            for k in SINKS:
                s[f"up:{k}"] = sink_up(m, k)
            self.samples.append(s)
            self.stop_ev.wait(0.1)

    def start(self):
        self.t.start()
        return self

    def stop(self):
        self.stop_ev.set()
        self.t.join(5)

    def first_after(self, t0, key, deadline_s=120):
        """Seconds from t0 to the first sample after t0 where `key` grew in the same daemon
        process (or is above 0 in a process started after t0); None if never."""
        prev = None
        for s in self.samples:
            if s["t"] < t0:
                prev = s
                continue
            v = s.get(key)
            if v is None:
                continue
            if prev is not None and prev["pid"] == s["pid"] and prev.get(key) is not None:
                if v > prev[key]:
                    return s["t"] - t0
            elif v > 0:
                return s["t"] - t0
            prev = s
            if s["t"] - t0 > deadline_s:
                break
        return None

    def down_between(self, t0, t1, sink):
        return any(s.get(f"up:{sink}") == 0 for s in self.samples if t0 <= s["t"] <= t1)


# ---- the stack -------------------------------------------------------------------------

class Stack:
    def __init__(self, work, things, rng):
        self.work = Path(work)
        self.rng = rng
        self.things = things
        # rows queued in a steady stack: the S3 sink holds 1 s of records (flush_age) for
        # each of three sinks' rows; settling waits for less than about four seconds' worth
        self.steady_rows = 200
        self.certs = harness.Certs(self.work / "certs", things=things)
        plugin = harness.BUILD / "tidegate_auth.so"
        self.registry = self.work / "registry.db"
        self.broker = harness.Broker(self.certs, self.work, extra_args=[
            "--plugin", plugin, "--registry", self.registry, "--wait-for-gateway"])
        self.kin = aws_peers.Kinesalite(workdir=str(self.mkdir("kinesalite")))
        self.s3 = aws_peers.S3rver(bucket=BUCKET, workdir=str(self.mkdir("s3rver")))
        self.kproxy = self.sproxy = None
        self.rules = self.mkdir("rules")
        self.faketime = self.work / "faketime"
        self.faketime.write_text("+0\n")
        self.mounted = None
        self.daemon = None

    def mkdir(self, name):
        p = self.work / name
        p.mkdir(parents=True, exist_ok=True)
        return p

    def register_things(self, things):
        """Every device registered with its own certificate (what the plugin admits)."""
        for i in range(1, things + 1):
            name = f"dev-{i:04d}"
            r = subprocess.run([harness.BUILD / "tidegate", "device", "--db", self.registry, "register", name,
                                "--cert", self.certs.thing(name)[0]], capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"registering {name}: {r.stderr}")

    def start(self):
        self.write_rule(RULE_A)
        self.register_things(self.things)
        self.broker.start()
        self.kin.start()
        self.kin.create_stream(STREAM, shards=2)
        self.s3.start()
        self.kproxy = ChaosProxy(self.kin.port)
        self.sproxy = ChaosProxy(self.s3.port)
        sinks = harness.DEFAULT_SINKS + f"""
[sink kin]
type = kinesis
stream = {STREAM}
endpoint = http://127.0.0.1:{self.kproxy.port}
access_key_id = {aws_peers.KINESIS_KEY}
secret_access_key = {aws_peers.KINESIS_SECRET}
timeout = 3s
[sink s3]
type = s3
bucket = {BUCKET}
endpoint = http://127.0.0.1:{self.sproxy.port}
path_style = true
access_key_id = {aws_peers.S3RVER_KEY}
secret_access_key = {aws_peers.S3RVER_SECRET}
flush_age = 1s
timeout = 5s
"""
        # retry_base/retry_cap stay at their defaults (250 ms .. 30 s): recovery after an
        # outage must not depend on a short cap (issue 20 gap 2)
        # dedupe_per_thing: the duplicate memory must reach back as far as a redelivery can.
        # A broker kill -9 restores its last autosave and delivers again everything in flight
        # then, up to autosave_interval (30 s) old; at 25 msg/s per device the default 256
        # readings reach back 10 s, 2048 reach 80 s (README, "Delivery semantics")
        self.daemon = harness.Daemon(self.broker, self.work, sinks=sinks, extra=f"""
[ingest]
default_sinks = lake, kin, s3
rules_dir = {self.rules}
watch_rules = false
dedupe_per_thing = 2048
""")
        self.mount_data_dir()
        self.start_daemon()

    def mount_data_dir(self):
        """data_dir on a 48 MiB tmpfs, so disk_full fills a real file system."""
        data = self.daemon.dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m,mode=0700", "tmpfs", str(data)],
                           capture_output=True, text=True)
        if r.returncode == 0:
            self.mounted = data
            self.mount_error = None
        else:
            self.mount_error = (r.stderr or r.stdout).strip()

    def daemon_env(self):
        return {"LD_PRELOAD": FAKETIME_LIB, "FAKETIME_TIMESTAMP_FILE": str(self.faketime),
                "FAKETIME_CACHE_DURATION": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1",
                "FAKETIME_DONT_RESET": "1"}

    def start_daemon(self):
        self.daemon.start(env=self.daemon_env())

    def write_rule(self, rule):
        tmp = self.rules / ".chaos.json.tmp"
        tmp.write_text(json.dumps(rule))
        os.replace(tmp, self.rules / "chaos.json")

    def close(self):
        for p in (self.kproxy, self.sproxy):
            if p:
                p.close()
        if self.daemon and self.daemon.proc:
            self.daemon.proc.stop(timeout=30)
        self.broker.stop()
        self.kin.close()
        self.s3.close()
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.mounted)], capture_output=True)
            self.mounted = None


# ---- the faults ------------------------------------------------------------------------

class Phase:
    def __init__(self, name, injected, t_start, t_end, affects, notes=""):
        self.name, self.injected, self.t_start, self.t_end = name, injected, t_start, t_end
        self.affects = affects  # "ingest" and/or sink names the fault stops
        self.notes = notes
        self.extra = {}


def hold(seconds):
    t = time.monotonic()
    wait_until(lambda: time.monotonic() - t >= seconds, seconds + 5, interval=0.05, what="fault hold")


def settle(st, deadline=120):
    """Until the fault's backlog is delivered (outbox nearly empty), every sink is up and the
    daemon is connected and accepting, seen twice 1 s apart: the next fault starts from a
    steady stack, so what a fault leaves behind is not counted against the next one."""
    seen = []

    def steady():
        # caught up: each sink has delivered about as many records as ingest accepted (not
        # the outbox_rows gauge: a full disk can leave it off, see the table's end figures)
        m = st.daemon.metrics()
        acc = m.get("tidegate_messages_accepted_total")
        return acc and m.get("tidegate_broker_connected") == 1 and all(sink_up(m, s) == 1 for s in SINKS) and \
            all(m.get(f'tidegate_sink_records_total{{sink="{s}",outcome="ok"}}', 0) >= acc - st.steady_rows / 3
                for s in SINKS) and acc

    def done():
        a = steady()
        if not a:
            seen.clear()
            return False
        seen.append((time.monotonic(), a))
        first = seen[0]
        return seen[-1][0] - first[0] >= 1.0 and seen[-1][1] > first[1]
    wait_until(done, deadline, interval=0.2, what="the stack settled after a fault")


def f_daemon_kill9(st, cfg, rng):
    phases = []
    for i in range(cfg["kills"]):
        hold(rng.uniform(*cfg["gap"]))
        t0 = time.monotonic()
        st.daemon.kill9()
        down = rng.uniform(0.3, 1.5)
        hold(down)
        t1 = time.monotonic()
        st.start_daemon()
        phases.append(Phase(f"daemon_kill9 #{i + 1}", f"kill -9 of the daemon under load, restarted {down:.1f} s later",
                            t0, t1, ["ingest", *SINKS]))
        settle(st)
    return phases


def f_broker_stop(st, cfg, rng):
    hold(rng.uniform(*cfg["gap"]))
    t0 = time.monotonic()
    st.broker.proc.stop()
    down = rng.uniform(2, 4)
    hold(down)
    t1 = time.monotonic()
    st.broker.start()
    p = Phase("broker_stop", f"mosquitto stopped (SIGTERM: it saves its sessions), started {down:.1f} s later",
              t0, t1, ["ingest"])
    settle(st)
    return [p]


def f_broker_kill9(st, cfg, rng):
    hold(rng.uniform(*cfg["gap"]))
    t0 = time.monotonic()
    st.broker.proc.kill9()
    hold(1.0)
    t1 = time.monotonic()
    st.broker.start()
    p = Phase("broker_kill9", "kill -9 of mosquitto under load, restarted 1.0 s later", t0, t1, ["ingest"],
              notes="the restarted broker may have lost the daemon's session (last autosave before its "
                    "subscription); plugin_opt_wait_for_gateway keeps devices out until the daemon has "
                    "subscribed again, so nothing is acknowledged to nobody")
    settle(st)
    return [p]


def f_uplink_outage(st, cfg, rng):
    hold(rng.uniform(*cfg["gap"]))
    t0 = time.monotonic()
    st.kproxy.set("down")
    st.sproxy.set("down")
    st.kin.stop()
    st.s3.stop()
    down = cfg["outage"]
    hold(down)
    st.kin.start()
    st.s3.start()
    st.kproxy.set("pass")
    st.sproxy.set("pass")
    t1 = time.monotonic()
    p = Phase("uplink_outage", f"kinesalite and s3rver stopped for {down:.0f} s (their ports refuse), then "
              "restarted on the same ports and data", t0, t1, ["kin", "s3"])
    settle(st)
    return [p]


def f_uplink_blackhole(st, cfg, rng):
    hold(rng.uniform(*cfg["gap"]))
    t0 = time.monotonic()
    st.kproxy.set("blackhole")
    st.sproxy.set("blackhole")
    hold(cfg["blackhole"] / 2)
    # a daemon stop while its sinks hang on a black hole: it must end (the drain is bounded)
    ts = time.monotonic()
    rc = st.daemon.stop()
    stop_s = time.monotonic() - ts
    st.start_daemon()
    hold(cfg["blackhole"] / 2)
    st.kproxy.set("pass")
    st.sproxy.set("pass")
    t1 = time.monotonic()
    p = Phase("uplink_blackhole", f"Kinesis and S3 endpoints accept connections and never answer for "
              f"{cfg['blackhole']:.0f} s; a daemon stop (SIGTERM) in the middle took {stop_s:.1f} s (exit {rc})",
              t0, t1, ["kin", "s3"])
    p.extra = {"daemon_stop_s": round(stop_s, 2), "daemon_stop_rc": rc}
    settle(st)
    return [p]


def f_uplink_slow(st, cfg, rng):
    hold(rng.uniform(*cfg["gap"]))
    t0 = time.monotonic()
    st.kproxy.set("slow")
    st.sproxy.set("slow")
    hold(cfg["slow"])
    st.kproxy.set("pass")
    st.sproxy.set("pass")
    t1 = time.monotonic()
    p = Phase("uplink_slow", f"Kinesis and S3 through a {SLOW_BPS // 1024} KB/s proxy for {cfg['slow']:.0f} s",
              t0, t1, ["kin", "s3"])
    settle(st, 180)
    return [p]


def f_disk_full(st, cfg, rng):
    hold(rng.uniform(*cfg["gap"]))
    if not st.mounted:
        return [Phase("disk_full", f"not run: tmpfs mount refused ({st.mount_error})", time.monotonic(),
                      time.monotonic(), [])]
    ballast = st.mounted / "ballast"
    t0 = time.monotonic()
    # Kinesis refuses meanwhile, so its backlog grows the outbox into the full disk (with every
    # sink delivering, SQLite reuses its free pages and a full disk never bites)
    st.kproxy.set("down")
    with open(ballast, "wb") as f:
        chunk = b"\0" * (1 << 20)
        try:
            while True:
                f.write(chunk)
                f.flush()
        except OSError:
            pass
    seen_full = [False]

    def full_seen():
        m = st.daemon.metrics()
        seen_full[0] = seen_full[0] or (m.get("tidegate_outbox_disk_full") == 1)
        return seen_full[0]
    try:
        wait_until(full_seen, 60, interval=0.2, what="disk full shown in /metrics")
    except TimeoutError:
        pass
    hold(cfg["disk"])
    ballast.unlink()
    st.kproxy.set("pass")
    t1 = time.monotonic()
    p = Phase("disk_full", f"data_dir's 48 MiB tmpfs filled by a ballast file while Kinesis refuses (its backlog "
              f"must grow the outbox), held {cfg['disk']:.0f} s after /metrics showed it, then freed",
              t0, t1, ["ingest", "kin"])
    p.extra = {"disk_full_in_metrics": seen_full[0]}
    settle(st)
    return [p]


def f_sighup_storm(st, cfg, rng):
    hold(rng.uniform(*cfg["gap"]))
    pid = st.daemon.proc.p.pid
    rss0 = harness.rss_mb(pid)
    t0 = time.monotonic()
    for i in range(cfg["hups"]):
        st.write_rule(RULE_B if i % 2 else RULE_A)
        st.daemon.proc.send_signal(signal.SIGHUP)
        time.sleep(rng.uniform(0.005, 0.03))
    t1 = time.monotonic()
    hold(2)
    alive = st.daemon.proc.alive()
    rss1 = harness.rss_mb(pid)
    p = Phase("sighup_storm", f"{cfg['hups']} SIGHUPs in {t1 - t0:.1f} s, the rule file rewritten before each",
              t0, t1, [])
    p.extra = {"alive": alive, "rss_before_mb": rss0, "rss_after_mb": rss1,
               "reloads_logged": st.daemon.log().count("SIGHUP: reloading")}
    settle(st)
    return [p]


def f_clock_jump(st, cfg, rng):
    hold(rng.uniform(*cfg["gap"]))
    t0 = time.monotonic()
    st.faketime.write_text("-3600\n")
    hold(cfg["clock"])
    st.faketime.write_text("+3600\n")
    hold(cfg["clock"])
    st.faketime.write_text("+0\n")
    hold(1.5)  # the daemon re-reads the offset each second
    t1 = time.monotonic()
    p = Phase("clock_jump", f"the daemon's wall clock stepped back 1 h for {cfg['clock']:.0f} s, forward 1 h for "
              f"{cfg['clock']:.0f} s, then back to true time (libfaketime; monotonic untouched)", t0, t1, [])
    settle(st)
    return [p]


FAULTS = [f_daemon_kill9, f_broker_stop, f_broker_kill9, f_uplink_outage, f_uplink_blackhole, f_uplink_slow,
          f_disk_full, f_sighup_storm, f_clock_jump]

PROFILES = {
    "full": {"things": 20, "rate": 25, "kills": 3, "gap": (8, 15), "outage": 30, "blackhole": 20, "slow": 20,
             "disk": 15, "hups": 500, "clock": 10, "baseline": 15},
    "short": {"things": 5, "rate": 20, "kills": 1, "gap": (2, 3), "outage": 6, "blackhole": 8, "slow": 5,
              "disk": 4, "hups": 120, "clock": 3, "baseline": 3},
}


# ---- reading the sinks back ------------------------------------------------------------

def read_lake_duckdb(lake):
    r = subprocess.run(["node", str(HERE / "lake_query.mjs"), str(lake)], capture_output=True, text=True,
                       cwd=str(REPO / "tests"), timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"lake_query.mjs failed: {r.stderr[-2000:]}")
    return [(x["thing"], int(x["seq"]), x["msg_id"]) for x in json.loads(r.stdout)]


def read_kinesis_boto3(endpoint):
    out = []
    for rec in aws_peers.read_kinesis(endpoint, STREAM):
        d = json.loads(rec["data"])
        if "seq" in d and "thing" in d:
            out.append((d["thing"], int(d["seq"]), d["msg_id"]))
    return out


def read_s3_boto3(endpoint):
    out = []
    for o in aws_peers.read_s3(endpoint, BUCKET, prefix="telemetry/"):
        for d in o["lines"]:
            if "seq" in d and "thing" in d:
                out.append((d["thing"], int(d["seq"]), d["msg_id"]))
    return out


def read_acked(path):
    """{(thing, seq): (ack wall time in ms, PUBACK reason)} (the first acknowledgement; reason
    16 = the broker had no matching subscriber for it)."""
    acked = {}
    for line in Path(path).read_text().splitlines():
        f = line.split()
        if len(f) == 4:
            acked.setdefault((f[0], int(f[1])), (int(f[2]), int(f[3])))
    return acked


def lake_hours(lake):
    """The lake's telemetry hour partitions (year/month/day/hour): a wall clock stepped an hour
    back and forward shows as records filed under the neighbouring hours."""
    root = Path(lake) / "telemetry"
    return sorted({"/".join(p.relative_to(root).parts[:4]) for p in root.rglob("*.json*")})


# ---- the run ---------------------------------------------------------------------------

def run(work, profile="full", seed=20, log=print):
    cfg = PROFILES[profile]
    rng = random.Random(seed)
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    st = Stack(work, cfg["things"], rng)
    st.steady_rows = max(200, 4 * cfg["things"] * cfg["rate"])
    phases, result = [], {}
    t_begin = time.monotonic()
    wall_begin = time.time()
    try:
        st.start()
        poller = Poller(st).start()
        acked_log = work / "acked.log"
        sim, summary_path = harness.Sim.start(st.broker, work, "--things", cfg["things"], "--rate", cfg["rate"],
                                              "--duration", 3600, "--qos", 1, "--seed", seed, "--quiet",
                                              "--drain-timeout", 120, "--acked-log", acked_log)
        wait_until(lambda: st.daemon.metric("tidegate_messages_accepted_total", 0) > 0, 30, what="load flowing")
        t = time.monotonic()
        hold(cfg["baseline"])
        phases.append(Phase("baseline", "no fault", t, time.monotonic(), []))
        for f in FAULTS:
            log(f"chaos: {f.__name__[2:]}")
            phases += f(st, cfg, rng)
        hold(cfg["gap"][0])
        t_load_end = time.monotonic()
        sim.send_signal(signal.SIGTERM)
        sim_rc = sim.wait(180)
        okeys = [f'tidegate_sink_records_total{{sink="{s}",outcome="ok"}}' for s in SINKS]
        last = []

        def quiet():  # every sink up and nothing delivered for 3 s: all that could go went
            m = st.daemon.metrics()
            cur = (tuple(m.get(k) for k in okeys), all(sink_up(m, s) == 1 for s in SINKS))
            last.append((time.monotonic(), cur))
            while last and last[0][1] != cur:
                last.pop(0)
            return cur[1] and last[-1][0] - last[0][0] >= 3.0
        wait_until(quiet, 180, interval=0.5, what="deliveries finished")
        drained = st.daemon.metric("tidegate_outbox_rows", 1) == 0
        final_metrics = st.daemon.metrics()
        poller.stop()
        stop_t = time.monotonic()
        daemon_rc = st.daemon.stop()
        stop_s = time.monotonic() - stop_t
        summary = json.loads(summary_path.read_text())
        integrity = "not checked"
        rows_in_db = None
        db = st.daemon.dir / "data" / "outbox.db"
        if db.exists():
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                integrity = con.execute("PRAGMA integrity_check").fetchone()[0]
                rows_in_db = con.execute("SELECT count(*) FROM outbox").fetchone()[0]
            finally:
                con.close()
        log("chaos: reading the sinks back")
        recs = {"lake": read_lake_duckdb(st.daemon.lake), "kin": read_kinesis_boto3(st.kin.endpoint),
                "s3": read_s3_boto3(st.s3.endpoint)}
        acked = read_acked(acked_log)
        daemon_log = st.daemon.log()
        hours = lake_hours(st.daemon.lake)
        result = analyse(phases, poller, recs, acked, t_begin, wall_begin)
        rss = [s["rss_mb"] for s in poller.samples if s["rss_mb"] is not None]
        result.update({
            "profile": profile, "seed": seed, "things": cfg["things"], "rate_per_thing": cfg["rate"],
            "duration_s": round(time.monotonic() - t_begin, 1), "load_s": round(t_load_end - t_begin, 1),
            "device_sim": {k: summary.get(k) for k in ("sent", "acked", "failed", "reconnects",
                                                       "acked_no_subscribers")},
            "device_sim_rc": sim_rc, "daemon_exit": daemon_rc, "final_stop_s": round(stop_s, 2),
            "outbox_integrity": integrity, "drained": drained,
            "outbox_rows_gauge_at_end": final_metrics.get("tidegate_outbox_rows"), "outbox_rows_in_db": rows_in_db,
            "rss_mb": {"min": min(rss), "max": max(rss), "series": rss_series(poller, t_begin)},
            "daemon_crashes": daemon_log.count("Sanitizer") + daemon_log.count("Segmentation"),
            "disk_full_logged": "disk full" in daemon_log,
            "lake_hour_partitions": hours,
        })
        return result
    finally:
        st.close()


def rss_series(poller, t0):
    """Daemon RSS every 5 s of the run (MiB), for the table's 'RSS over the run'."""
    out, next_t = [], 0.0
    for s in poller.samples:
        if s["rss_mb"] is None:
            continue
        if s["t"] - t0 >= next_t:
            out.append([round(s["t"] - t0, 1), round(s["rss_mb"], 1)])
            next_t += 5.0
    return out


def phase_rss(poller, t_from, t_until):
    """The daemon's RSS (MiB) over one phase, from its start to the next phase's: the last
    sample before it, the highest and the last within it, and whether the daemon process
    changed (a restart starts from a fresh heap)."""
    before = [s for s in poller.samples if s["t"] < t_from and s["rss_mb"] is not None]
    inside = [s for s in poller.samples if t_from <= s["t"] < t_until and s["rss_mb"] is not None]
    if not inside:
        return None
    start = before[-1] if before else inside[0]
    return {"start": round(start["rss_mb"], 1), "max": round(max(s["rss_mb"] for s in inside), 1),
            "end": round(inside[-1]["rss_mb"], 1),
            "restarted": len({s["pid"] for s in inside} | {start["pid"]}) > 1}


def analyse(phases, poller, recs, acked, t_begin, wall_begin):
    # the wall time of each phase's start (phases are attributed by the device's ack time)
    bounds = [wall_begin * 1000 + (p.t_start - t_begin) * 1000 for p in phases]

    def phase_of(ack_ms):
        i = 0
        for k, b in enumerate(bounds):
            if ack_ms >= b:
                i = k
        return i

    key_phase = {k: phase_of(ms) for k, (ms, _) in acked.items()}
    out_phases = []
    per_phase = [{s: collections.Counter() for s in SINKS} for _ in phases]
    sinks_total = {}
    for s in SINKS:
        by_key = collections.defaultdict(list)
        for thing, seq, mid in recs[s]:
            by_key[(thing, seq)].append(mid)
        dup_same = dup_new = 0
        for k, mids in by_key.items():
            c = collections.Counter(mids)
            same = sum(v - 1 for v in c.values())
            new = len(c) - 1
            dup_same += same
            dup_new += new
            ph = key_phase.get(k)
            if ph is not None:
                per_phase[ph][s]["dup_same"] += same
                per_phase[ph][s]["dup_new"] += new
        lost = [k for k in acked if k not in by_key]
        for k in lost:
            per_phase[key_phase[k]][s]["lost"] += 1
            if acked[k][1] == 16:
                per_phase[key_phase[k]][s]["lost_nosub"] += 1
        sinks_total[s] = {"records": len(recs[s]), "distinct_keys": len(by_key), "dup_same_msg_id": dup_same,
                          "dup_new_msg_id": dup_new, "lost": len(lost), "acked": len(acked),
                          "lost_no_subscriber": sum(1 for k in lost if acked[k][1] == 16),
                          "examples_lost": sorted(f"{t}:{q}" for t, q in lost)[:5]}
    acked_per_phase = collections.Counter(key_phase.values())
    nosub_per_phase = collections.Counter(key_phase[k] for k, (_, rc) in acked.items() if rc == 16)
    for i, p in enumerate(phases):
        until = phases[i + 1].t_start if i + 1 < len(phases) else float("inf")
        row_rss = phase_rss(poller, p.t_start, until)
        row = {"fault": p.name, "injected": p.injected, "start_s": round(p.t_start - t_begin, 1),
               "end_s": round(p.t_end - t_begin, 1), "acked": acked_per_phase.get(i, 0),
               "acked_no_subscriber": nosub_per_phase.get(i, 0), "notes": p.notes,
               "rss_mb": row_rss, **p.extra, "sinks": {}}
        for s in SINKS:
            stopped = s in p.affects and (poller.down_between(p.t_start, p.t_end + 1, s) or "ingest" in p.affects)
            rec = poller.first_after(p.t_end, f'tidegate_sink_records_total{{sink="{s}",outcome="ok"}}') \
                if stopped else None
            row["sinks"][s] = {"lost": per_phase[i][s]["lost"], "lost_no_subscriber": per_phase[i][s]["lost_nosub"],
                               "dup_same": per_phase[i][s]["dup_same"],
                               "dup_new": per_phase[i][s]["dup_new"],
                               "recovery_s": round(rec, 2) if rec is not None else None}
        if "ingest" in p.affects:
            rec = poller.first_after(p.t_end, "tidegate_messages_accepted_total")
            row["ingest_recovery_s"] = round(rec, 2) if rec is not None else None
        out_phases.append(row)
    return {"phases": out_phases, "sinks": sinks_total}


def run_fuzz(bindir, budget_s, log=print):
    """Each libFuzzer target in bindir for budget_s seconds over its corpus
    (tests/fuzz/corpus/<target>); new coverage goes to a scratch folder, a crashing input is
    written into the corpus itself (crash-<sha1>), where `make check`'s replay finds it."""
    import tempfile
    out = []
    for b in sorted(Path(bindir).glob("fuzz_*")):
        name = b.name[len("fuzz_"):]
        corpus = REPO / "tests" / "fuzz" / "corpus" / name
        corpus.mkdir(parents=True, exist_ok=True)
        before = {p.name for p in corpus.iterdir()}
        log(f"chaos: fuzzing {name} for {budget_s} s")
        with tempfile.TemporaryDirectory(prefix="tg-chaos-fuzz-") as scratch:
            r = subprocess.run([str(b), f"-max_total_time={budget_s}", "-print_final_stats=1", "-timeout=10",
                                "-rss_limit_mb=2048", f"-artifact_prefix={corpus}/crash-", scratch, str(corpus)],
                               capture_output=True, text=True, errors="replace", cwd=str(REPO),
                               timeout=budget_s + 120)
        stats = {}
        for line in r.stderr.splitlines():
            if line.startswith("stat::"):
                k, _, v = line[6:].partition(":")
                stats[k.strip()] = v.strip()
        crashes = sorted({p.name for p in corpus.iterdir()} - before)
        out.append({"target": name, "seconds": budget_s, "exit": r.returncode,
                    "execs": int(stats.get("number_of_executed_units", 0)),
                    "new_units": int(stats.get("new_units_added", 0)), "crashes": crashes,
                    "corpus_files": len(before)})
    return out


def fmt(v):
    return "—" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))


def fmt_rss(v):
    if not v:
        return "—"
    return f"{v['start']:.1f} / {v['max']:.1f} / {v['end']:.1f}" + (" (restarted)" if v["restarted"] else "")


def to_markdown(r, cmd):
    L = [f"# Chaos results ({r['profile']})", "",
         f"Written by `{cmd}`; do not edit by hand. Seed {r['seed']}, {r['things']} devices × "
         f"{r['rate_per_thing']} msg/s (mTLS, QoS 1, per-device certificates, auth plugin with the registry), "
         f"three sinks (lake folder read with DuckDB; Kinesis = kinesalite and S3 = s3rver, read with boto3). "
         f"Run {r['duration_s']} s; device_sim: {r['device_sim']['sent']} sent, {r['device_sim']['acked']} acknowledged "
         f"by the broker ({r['device_sim']['acked_no_subscribers']} of them with no subscriber), "
         f"{r['device_sim']['reconnects']} reconnects.", "",
         "**lost** = acknowledged to the device and in no record of that sink (in brackets: of those, how many the "
         "broker acknowledged with reason 16, *no matching subscribers*: it dropped them itself, the gateway never "
         "saw them); **dup same / new** = extra copies "
         "under the same msg_id / under another msg_id; **recovery** = seconds from the end of the fault to the "
         "sink's first delivery (sinks the fault stopped; `—`: not stopped by it); ingest = to the first message "
         "accepted again; **RSS** = the daemon's VmRSS at the phase's start, its highest and its last value before "
         "the next phase ((restarted): a new daemon process in the phase). A message belongs to the phase in which "
         "the broker acknowledged it.", "",
         "| fault | injected | at s | acked | lake lost | kin lost | s3 lost | dup same (l/k/s) | dup new (l/k/s) "
         "| recovery s (l/k/s) | ingest s | RSS MiB start / max / end |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in r["phases"]:
        sk = p["sinks"]
        L.append(f"| {p['fault']} | {p['injected']} | {p['start_s']}–{p['end_s']} | {p['acked']} | "
                 + " | ".join(f"{sk[s]['lost']} ({sk[s]['lost_no_subscriber']})" for s in SINKS) + " | "
                 f"{'/'.join(str(sk[s]['dup_same']) for s in SINKS)} | "
                 f"{'/'.join(str(sk[s]['dup_new']) for s in SINKS)} | "
                 f"{'/'.join(fmt(sk[s]['recovery_s']) for s in SINKS)} | {fmt(p.get('ingest_recovery_s'))} | "
                 f"{fmt_rss(p.get('rss_mb'))} |")
    L += ["", "| sink | records | distinct device keys | dup same msg_id | dup new msg_id | lost | of which no "
          "subscriber at the broker |", "|---|---|---|---|---|---|---|"]
    for s, v in r["sinks"].items():
        L.append(f"| {s} | {v['records']} | {v['distinct_keys']} | {v['dup_same_msg_id']} | {v['dup_new_msg_id']} "
                 f"| {v['lost']} | {v['lost_no_subscriber']} |")
    rs = r["rss_mb"]
    L += ["", f"Daemon RSS over the run: {rs['min']:.1f}–{rs['max']:.1f} MiB (every 5 s: "
          + ", ".join(f"{v:.0f}" for _, v in rs["series"]) + ").",
          f"Outbox integrity_check after the run: {r['outbox_integrity']}. Final daemon stop: {r['final_stop_s']} s, "
          f"exit {r['daemon_exit']}. Outbox after the load: drained {r['drained']} (gauge "
          f"{r['outbox_rows_gauge_at_end']}, rows in the database after the stop {r['outbox_rows_in_db']}). Disk full logged by the daemon: {r['disk_full_logged']}. Lake hour partitions "
          f"(the clock steps file records under the neighbouring hours): {', '.join(r['lake_hour_partitions'])}."]
    if r.get("fuzz"):
        L += ["", "| fuzz target | budget s | executions | new coverage units | crashing inputs kept |",
              "|---|---|---|---|---|"]
        for f in r["fuzz"]:
            L.append(f"| {f['target']} | {f['seconds']} | {f['execs']} | {f['new_units']} | "
                     f"{', '.join(f['crashes']) or 'none'} |")
    notes = [f"- {p['fault']}: {p['notes']}" for p in r["phases"] if p.get("notes")]
    extras = [f"- {p['fault']}: " + ", ".join(f"{k} = {p[k]}" for k in
                                               ("daemon_stop_s", "alive", "rss_before_mb", "rss_after_mb",
                                                "reloads_logged", "disk_full_in_metrics") if k in p)
              for p in r["phases"] if any(k in p for k in ("daemon_stop_s", "alive", "disk_full_in_metrics"))]
    if notes or extras:
        L += ["", "Notes:"] + notes + extras
    return "\n".join(L) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--short", action="store_true", help="one pass of each fault, small load")
    ap.add_argument("--seed", type=int, default=20)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "chaos"))
    ap.add_argument("--work", default=None)
    ap.add_argument("--fuzz", default=None, help="folder of libFuzzer builds of tests/fuzz (make chaos)")
    ap.add_argument("--fuzz-budget", type=int, default=60, help="seconds per fuzz target")
    a = ap.parse_args()
    # a SIGTERM (make interrupted, a timeout) still stops every server and unmounts the tmpfs
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    import tempfile
    work = Path(a.work or tempfile.mkdtemp(prefix="tg-chaos-"))
    r = run(work, "short" if a.short else "full", a.seed)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = "make chaos" if not a.short else "tests/chaos/chaos.py --short"

    def write():
        out.with_suffix(".json").write_text(json.dumps(r, indent=1) + "\n")
        out.with_suffix(".md").write_text(to_markdown(r, cmd))
    write()  # the schedule's results stand even if a fuzz run goes wrong
    if a.fuzz:
        r["fuzz"] = run_fuzz(a.fuzz, a.fuzz_budget)
        write()
    print(to_markdown(r, cmd))
    if any(f["crashes"] for f in r.get("fuzz", [])):
        sys.exit("chaos: a fuzz target crashed; the input is kept in tests/fuzz/corpus")


if __name__ == "__main__":
    main()
