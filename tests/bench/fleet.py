#!/usr/bin/python3
"""tidegate fleet-scale benchmark (issue 19): `make bench-fleet`, part of `make bench`.

Rows (every number back to back in one run, as ratios where the machine is shared):
  connections  N things, each its own mTLS connection and certificate (tests/bench/bench_fleet
               connect), a connect burst at FLEET_CONNECT_RATE, then QoS 1 telemetry at a
               steady total rate of 50 % of the load-mode ceiling measured first. Three runs:
               broker with the CA + ACL file only -> counting subscriber; broker with the auth
               plugin and an M-thing registry -> counting subscriber; the same -> tidegate
               (shipped rules, schemas, aggregates, lake). Figures: CONNACKs/s, CONNECT ->
               CONNACK p50/p99 (and TCP start -> CONNACK), broker CPU per message with and
               without the plugin, the steady end-to-end ratio, tidegate RSS per connected thing.
  edge state   two messages each from K1 and then K2 distinct things over 4 loadgen
               connections (device_sim load mode), fresh daemon each, with the shipped rules,
               schemas and aggregates: RssAnon before / after, bytes per thing.
  registry     plugin checks per second (bench_fleet lookup: fingerprint -> identity ->
               attributes) on the M-thing registry; `tidegate device` list (whole, and one
               page), show and deactivate on it, wall time each.
  rules        10 vs R rules (tests/bench/fleet_rules.py: the shipped ones plus a realistic mix)
               end to end in load mode, alternated: tidegate CPU per message and the ratio;
               the daemon's reload time of the R-rule folder; the ingest latency (device ts ->
               lake received_at) of a steady load while the folder is reloaded every second,
               against the same load without reloads; RSS.

Scale (environment): FLEET_SCALE=full (10,000 connections, 100,000-thing registry, 1,000
rules, edge state at 10k and 100k things), reduced (2,000 / 20,000 / 1,000, edge 10k and
50k) or smoke (50 / 500 / 100, edge 200 / 1,000: what `make check` runs to keep the harness
alive). FLEET_THINGS, FLEET_REGISTRY, FLEET_RULES, FLEET_CONNECT_RATE, FLEET_SECONDS
override single values; FLEET_ONLY=connections,edge,registry,rules a subset.
Results: bench/results/fleet.json and fleet.md (smoke: bench/results/quick/).
Certificates are made once and cached in certs/out/fleet/ (bench_fleet certs), registries
in certs/out/fleet/registry-N-M.db (copied per run: the run deactivates a thing).
The open-file limit is raised here (soft to hard; as root hard to what the fleet needs) and
inherited by the broker and the load generator.
"""
import json
import re
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench as B  # noqa: E402  (the harness: processes, /proc, metrics, the broker)
import fleet_rules  # noqa: E402

REPO = B.REPO
SCALE = os.environ.get("FLEET_SCALE", "full")
_S = dict(
    full=dict(things=10000, registry=100000, rules=1000, edge=(10000, 100000), connect_rate=500, seconds=30,
              rules_msgs=100000, rules_reps=3, reload_seconds=15, conn_reps=2,
              sweep=(200, 300, 400)),
    reduced=dict(things=2000, registry=20000, rules=1000, edge=(10000, 50000), connect_rate=500, seconds=15,
                 rules_msgs=40000, rules_reps=2, reload_seconds=8, conn_reps=3,
                 sweep=(250,)),
    smoke=dict(things=50, registry=500, rules=100, edge=(200, 1000), connect_rate=200, seconds=3,
               rules_msgs=4000, rules_reps=1, reload_seconds=3, conn_reps=1,
               sweep=()),
)[SCALE]
F = dict(
    things=int(os.environ.get("FLEET_THINGS", _S["things"])),
    registry=int(os.environ.get("FLEET_REGISTRY", _S["registry"])),
    rules=int(os.environ.get("FLEET_RULES", _S["rules"])),
    connect_rate=float(os.environ.get("FLEET_CONNECT_RATE", _S["connect_rate"])),
    seconds=float(os.environ.get("FLEET_SECONDS", _S["seconds"])),
    edge=tuple(int(x) for x in os.environ["FLEET_EDGE"].split(",")) if os.environ.get("FLEET_EDGE") else _S["edge"],
    rules_msgs=int(os.environ.get("FLEET_RULES_MSGS", _S["rules_msgs"])),
    rules_reps=int(os.environ.get("FLEET_RULES_REPS", _S["rules_reps"])),
    conn_reps=int(os.environ.get("FLEET_CONN_REPS", _S["conn_reps"])),
    sweep=tuple(int(x) for x in os.environ["FLEET_SWEEP"].split(",") if x) if "FLEET_SWEEP" in os.environ
    else _S["sweep"],
    reload_seconds=_S["reload_seconds"], ceiling_msgs=20000 if SCALE == "smoke" else 100000,
)
ONLY = set(filter(None, os.environ.get("FLEET_ONLY", "").split(",")))
OUT = Path(os.environ.get("FLEET_OUT") or (REPO / "bench" / "results" / ("quick" if SCALE == "smoke" else "")))
FLEET_CERTS = B.CERTS / "fleet"
BENCH_FLEET = B.BIN / "bench_fleet"
log = B.log


def wanted(name):
    return not ONLY or name in ONLY


def raise_nofile(need):
    """soft limit to the hard one; as root the hard one too. Children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need and os.geteuid() == 0:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))
            return need
        except (ValueError, OSError):
            pass
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# ---- certificates and registries, cached -----------------------------------------------
def ensure_fleet(n, m):
    """n per-thing certificates and an m-thing registry (the first n with them), cached"""
    FLEET_CERTS.mkdir(parents=True, exist_ok=True)
    r = subprocess.run([BENCH_FLEET, "certs", "--ca-cert", B.CERTS / "ca.crt", "--ca-key", B.CERTS / "ca.key",
                        "--dir", FLEET_CERTS, "--things", str(n)], capture_output=True, text=True, check=True)
    made = json.loads(r.stdout.strip().splitlines()[-1])
    db = FLEET_CERTS / f"registry-{n}-{m}.db"
    if not db.exists():
        tmp = db.with_suffix(".tmp.db")
        for p in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            p.unlink(missing_ok=True)
        subprocess.run([BENCH_FLEET, "registry", "--db", tmp, "--certs-dir", FLEET_CERTS, "--things", str(n),
                        "--total", str(m)], capture_output=True, text=True, check=True)
        subprocess.run(["sqlite3", tmp, "PRAGMA wal_checkpoint(TRUNCATE);"], capture_output=True)
        tmp.rename(db)
    return made, db


def copy_db(src, dst):
    shutil.copy(src, dst)
    return dst


# ---- brokers -----------------------------------------------------------------------------
def start_broker(d, registry=None):
    """the packaged broker config (mTLS, CRL, ACL file); with registry: the auth plugin instead"""
    port = B.free_port()
    argv = [REPO / "certs/render-broker-conf.sh", "--certs", B.CERTS, "--port", str(port), "--dir", d / "broker",
            "--log", d / "broker" / "mosquitto.log", "--loadgen"]
    if registry:
        argv += ["--plugin", B.BIN / "tidegate_auth.so", "--registry", registry]
    conf = subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    # a connect line per client (log_type information) at 10,000 clients is the broker's log,
    # not its work: keep notices and up, as an operator at this scale would
    text = Path(conf).read_text().replace("log_type information\n", "").replace("connection_messages true",
                                                                               "connection_messages false")
    Path(conf).write_text(text)
    pr = B.Proc(["mosquitto", "-c", conf], d / "broker" / "stdout.log")
    B.wait_until(lambda: B.port_open(port) or not pr.alive(), 10, "mosquitto")
    if not pr.alive():
        raise RuntimeError(f"mosquitto exited; see {d}/broker")
    return pr, port


def tidegate_conf(d, port, http, rules_dir=None, aggregates=True, extra_ingest=()):
    """rules_dir: None the shipped rules, "" none"""
    rules_dir = REPO / "rules" if rules_dir is None else rules_dir
    lines = ["gateway_id = gw-fleet", f"data_dir = {d / 'data'}", "log_level = warn", "[broker]", f"port = {port}",
             f"ca_file = {B.CERTS}/ca.crt", f"cert_file = {B.CERTS}/gateway.crt", f"key_file = {B.CERTS}/gateway.key",
             "subscribe = devices/+/telemetry", "[ingest]", f"schemas_dir = {REPO / 'rules' / 'schemas'}"]
    if rules_dir:
        lines.append(f"rules_dir = {rules_dir}")
    agg = REPO / "rules" / "aggregates" / "aggregates.json"
    if aggregates and agg.is_file():
        lines.append(f"aggregates_file = {agg}")
    lines += list(extra_ingest)
    lines += ["[http]", f"port = {http}", "[sink lake]", "type = file", f"path = {d / 'lake'}"]
    conf = d / "tidegate.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


def start_tidegate(d, port, **kw):
    http = B.free_port()
    tg = B.start_tidegate(d, tidegate_conf(d, port, http, **kw), http)
    B.wait_until(lambda: (B.metrics(http) or {}).get("tidegate_broker_connected") == 1, 15, "tidegate connected")
    time.sleep(0.3)  # SUBSCRIBE follows CONNACK
    return tg, http


def anon_kib(pid):
    return B.mem_kib(pid).get("RssAnon", 0)


# ---- connections -----------------------------------------------------------------------------
def connect_bound():
    """bench_fleet loads every key first (about 2 ms each on a busy box), then bursts, then
    gives the last handshakes 60 s: wait that long and a margin"""
    return F["things"] * 0.004 + F["things"] / F["connect_rate"] + 120


def fleet_argv(port, d, rate, seconds):
    return [BENCH_FLEET, "connect", "--port", str(port), "--cafile", B.CERTS / "ca.crt", "--certs-dir", FLEET_CERTS,
            "--things", str(F["things"]), "--connect-rate", str(F["connect_rate"]), "--rate", f"{rate:.1f}",
            "--duration", str(seconds), "--out", d / "fleet.json", "--ready", d / "fleet.ready"]


def run_fleet_sub(d, rate, registry=None):
    """the fleet -> broker (ACL file, or plugin + registry) -> counting subscriber"""
    d.mkdir(parents=True)
    broker, port = start_broker(d, registry)
    try:
        sub, out = B.start_sub(d, port, ["devices/#"], 0, "sub", ident="ops", idle=5,
                               timeout=connect_bound() + F["seconds"] + 120)
        rss0 = B.mem_kib(broker.pid)["VmRSS"]
        c0 = B.cpu_seconds(broker.pid)
        fl = B.Proc(fleet_argv(port, d, rate, F["seconds"]), d / "fleet.log")
        B.wait_until(lambda: (d / "fleet.ready").exists() or not fl.alive(), connect_bound(), "the fleet connected")
        c1 = B.cpu_seconds(broker.pid)
        rss_conn = B.mem_kib(broker.pid)["VmRSS"]
        fl.wait(F["seconds"] + 60)
        c2 = B.cpu_seconds(broker.pid)
        sub.wait(60)
        f = B.read_json(d / "fleet.json")
        s = B.read_json(out)
        rate_far = f["acked"] / (s["last_mono_s"] - f["pub_start_mono_s"]) if s["count"] else 0
        return dict(fleet=f, received=s["count"], lat_ms=s["lat_ms"], msgs_per_s=rate_far,
                    complete=s["count"] >= f["acked"] == f["sent"] > 0 and f["connected"] == F["things"],
                    broker_cpu_s_connect=c1 - c0, broker_cpu_ms_per_connect=(c1 - c0) / max(1, f["connected"]) * 1e3,
                    broker_cpu_s_per_1m=(c2 - c1) / max(1, f["acked"]) * 1e6,
                    broker_rss_mib=dict(idle=rss0 / 1024, connected=rss_conn / 1024),
                    broker_bytes_per_conn=(rss_conn - rss0) * 1024 / max(1, f["connected"]))
    finally:
        B.stop_all()


def run_fleet_tidegate(d, rate, registry):
    """the fleet -> broker (plugin) -> tidegate (shipped rules, schemas, aggregates, lake)"""
    d.mkdir(parents=True)
    broker, port = start_broker(d, registry)
    try:
        tg, http = start_tidegate(d, port)
        time.sleep(1)
        a0 = anon_kib(tg.pid)
        c0 = B.cpu_seconds(broker.pid)
        fl = B.Proc(fleet_argv(port, d, rate, F["seconds"]), d / "fleet.log")
        B.wait_until(lambda: (d / "fleet.ready").exists() or not fl.alive(), connect_bound(), "the fleet connected")
        tc1, c1 = B.cpu_seconds(tg.pid), B.cpu_seconds(broker.pid)
        fl.wait(F["seconds"] + 60)
        f = B.read_json(d / "fleet.json")
        done = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if B.all_delivered(B.metrics(http), f["acked"]):
                done = time.monotonic()
                break
            time.sleep(0.02)
        tc2, c2 = B.cpu_seconds(tg.pid), B.cpu_seconds(broker.pid)
        time.sleep(0.5)
        a1 = anon_kib(tg.pid)
        m = B.metrics(http) or {}
        tg.stop()
        lake = B.lake_lines(d / "lake", remove=True)
        return dict(fleet=f, msgs_per_s=f["acked"] / (done - f["pub_start_mono_s"]) if done else 0,
                    complete=done is not None and lake >= f["acked"] == f["sent"] > 0, lake_lines=lake,
                    tidegate_cpu_s_per_1m=(tc2 - tc1) / max(1, f["acked"]) * 1e6,
                    broker_cpu_s_per_1m=(c2 - c1) / max(1, f["acked"]) * 1e6,
                    tidegate_anon_mib=dict(before=a0 / 1024, after=a1 / 1024),
                    tidegate_bytes_per_thing=(a1 - a0) * 1024 / F["things"],
                    quarantined=m.get("tidegate_messages_quarantined_total"))
    finally:
        B.stop_all()


def run_recheck(work, db, changes=6, rate=2000, seconds=24):
    """A registry change under load: every change makes the plugin re-check each connected
    thing in the broker's only thread. The fleet connects, publishes at a steady rate, and
    `tidegate device deactivate` / `activate` of a thing that is not connected runs every
    few seconds: the counting subscriber's latency (device ts -> arrival) with the changes,
    and the plugin's own account of each pass (its log line)."""
    d = work / "recheck"
    d.mkdir(parents=True)
    reg = copy_db(db, work / "reg-recheck.db")
    broker, port = start_broker(d, reg)
    try:
        sub, out = B.start_sub(d, port, ["devices/#"], 0, "sub", ident="ops", idle=5,
                               timeout=connect_bound() + seconds + 120)
        fl = B.Proc(fleet_argv(port, d, rate, seconds), d / "fleet.log")
        B.wait_until(lambda: (d / "fleet.ready").exists() or not fl.alive(), connect_bound(), "the fleet connected")
        time.sleep(seconds / (changes + 2))
        spare = f"fleet-{F['registry'] - 1:06d}"  # registered, never connected
        for i in range(changes):
            subprocess.run([B.BIN / "tidegate", "device", "--db", reg, "activate" if i % 2 else "deactivate", spare],
                           check=True, capture_output=True)
            time.sleep(seconds / (changes + 2))
        fl.wait(seconds + 60)
        sub.wait(60)
        s, f = B.read_json(out), B.read_json(d / "fleet.json")
        log = (d / "broker" / "mosquitto.log").read_text(errors="replace")
        passes = []
        for m in re.finditer(r"re-checked (\d+) connected things, disconnected (\d+); ([0-9.]+) ms of work in (\d+) "
                             r"slices over (\d+) ms", log):
            passes.append(dict(things=int(m.group(1)), kicked=int(m.group(2)), work_ms=float(m.group(3)),
                               slices=int(m.group(4)), wall_ms=int(m.group(5))))
        return dict(changes=changes, rate=rate, seconds=seconds, connected=f["connected"], acked=f["acked"],
                    received=s["count"], lat_ms=s["lat_ms"], passes=passes)
    finally:
        B.stop_all()


def run_connections(work, db):
    log(f"connections: load-mode ceiling ({F['ceiling_msgs']} msgs) for the steady rate")
    B.P["msgs"] = F["ceiling_msgs"]
    ceil = B.run_ceiling(work / "ceiling")["msgs_per_s"]
    rate = 0.5 * ceil
    res = dict(ceiling_msgs_per_s=ceil, steady_rate=rate, things=F["things"], registry=F["registry"],
               connect_rate=F["connect_rate"], seconds=F["seconds"])
    log(f"  ceiling {ceil:.0f} msg/s; {F['things']} things at {F['connect_rate']:.0f} connects/s, then {rate:.0f} msg/s"
        f" for {F['seconds']:.0f} s; broker with the ACL file")
    # the ACL-file broker and the plugin broker alternate, and the figures are medians of the
    # per-rep comparisons: one run of each let the order and a neighbour's burst decide
    res["acl_reps"], res["plugin_reps"] = [], []
    for rep in range(F["conn_reps"]):
        a = run_fleet_sub(work / f"conn-acl-{rep}", rate)
        p = run_fleet_sub(work / f"conn-plugin-{rep}", rate, copy_db(db, work / f"reg-plugin-{rep}.db"))
        res["acl_reps"].append(a)
        res["plugin_reps"].append(p)
        log(f"  rep {rep + 1}: ACL {a['fleet']['connacks_per_s']:.0f} CONNACKs/s, p99 {a['fleet']['connect_ms']['p99']:.1f} ms,"
            f" {a['broker_cpu_ms_per_connect']:.2f} ms/connect, {a['broker_cpu_s_per_1m']:.1f} s/1M; plugin "
            f"{p['fleet']['connacks_per_s']:.0f} CONNACKs/s, p99 {p['fleet']['connect_ms']['p99']:.1f} ms, "
            f"{p['broker_cpu_ms_per_connect']:.2f} ms/connect, {p['broker_cpu_s_per_1m']:.1f} s/1M")
    # the rep of each kind whose CONNECT p99 is the middle one (of an even count, the lower of
    # the two middle ones) stands for it in the table's first rows
    def median_rep(reps):
        return sorted(reps, key=lambda r: r["fleet"]["connect_ms"]["p99"])[(len(reps) - 1) // 2]
    res["acl"], res["plugin"] = median_rep(res["acl_reps"]), median_rep(res["plugin_reps"])
    # what bounds CONNECT p99: the same burst through the plugin at lower rates (a short steady
    # phase), to show where the broker's one core stops keeping up with the handshakes
    res["sweep"] = []
    for r in F["sweep"]:
        keep = F["connect_rate"], F["seconds"]
        F["connect_rate"], F["seconds"] = float(r), 2.0
        try:
            sw = run_fleet_sub(work / f"conn-sweep-{r}", 1000, copy_db(db, work / f"reg-sweep-{r}.db"))
        finally:
            F["connect_rate"], F["seconds"] = keep
        res["sweep"].append(dict(rate=r, connacks_per_s=sw["fleet"]["connacks_per_s"], connect_ms=sw["fleet"]["connect_ms"],
                                 full_connect_ms=sw["fleet"]["full_connect_ms"],
                                 broker_cpu_ms_per_connect=sw["broker_cpu_ms_per_connect"]))
        log(f"  sweep {r}/s: p99 {sw['fleet']['connect_ms']['p99']:.1f} ms, {sw['broker_cpu_ms_per_connect']:.2f} ms/connect")
    if F["conn_reps"] > 1:
        log(f"  a registry change every few seconds with {F['things']} things connected through the plugin")
        res["recheck"] = run_recheck(work, db)
        rc = res["recheck"]
        log(f"  recheck: latency p99 {rc['lat_ms']['p99']:.1f} / max {rc['lat_ms']['max']:.1f} ms, "
            f"{len(rc['passes'])} passes")
    log("  tidegate behind the plugin")
    res["tidegate"] = run_fleet_tidegate(work / "conn-tidegate", rate, copy_db(db, work / "reg-tg.db"))
    t, p, a = res["tidegate"], res["plugin"], res["acl"]
    res["ratio_e2e"] = t["msgs_per_s"] / p["msgs_per_s"] if p["msgs_per_s"] else None
    # the plugin's share of the broker per PUBLISH: broker CPU per message with it, minus without
    shares = [pr["broker_cpu_s_per_1m"] / ar["broker_cpu_s_per_1m"] - 1
              for ar, pr in zip(res["acl_reps"], res["plugin_reps"]) if ar["broker_cpu_s_per_1m"]]
    res["plugin_cpu_shares"] = shares
    res["plugin_cpu_share"] = statistics.median(shares) if shares else None
    conn = [pr["broker_cpu_ms_per_connect"] - ar["broker_cpu_ms_per_connect"]
            for ar, pr in zip(res["acl_reps"], res["plugin_reps"])]
    res["plugin_connect_ms"] = statistics.median(conn) if conn else None
    log(f"  tidegate {t['msgs_per_s']:.0f} msg/s vs {p['msgs_per_s']:.0f} (ratio {res['ratio_e2e'] or 0:.3f}),"
        f" {t['tidegate_bytes_per_thing']:.0f} B/thing")
    return res


# ---- edge state ------------------------------------------------------------------------------
EDGE_VARIANTS = {  # what each adds: ingest + dedupe; + the shipped rules (alert state); + aggregates
    # dedupe's share: its per-thing ring (dedupe_per_thing timestamps, 256 by default) cut to 4
    "schemas only, dedupe_per_thing 4": dict(rules_dir="", aggregates=False, extra_ingest=["dedupe_per_thing = 4"]),
    "schemas only": dict(rules_dir="", aggregates=False),
    "+ shipped rules": dict(rules_dir=None, aggregates=False),
    "+ aggregates": dict(rules_dir=None, aggregates=True),
}


def run_edge(work, things, variant="+ aggregates"):
    d = work / f"edge-{things}-{list(EDGE_VARIANTS).index(variant)}"
    d.mkdir(parents=True)
    broker, port = B.start_broker(d)
    try:
        tg, http = start_tidegate(d, port, **EDGE_VARIANTS[variant])
        time.sleep(1)
        a0, r0 = anon_kib(tg.pid), B.mem_kib(tg.pid)["VmRSS"]
        def argv(summary):
            return [B.BIN / "device_sim", "--host", "127.0.0.1", "--port", port, "--cafile", B.CERTS / "ca.crt",
                    "--cert", B.CERTS / "loadgen.crt", "--key", B.CERTS / "loadgen.key", "--connections", 4,
                    "--things", things, "--qos", "1", "--seed", "7", "--quiet", "--max-rate", "--count", 2,
                    "--summary-json", summary]
        sim = B.Proc(argv(d / "sim.json"), d / "sim.log")
        sim.wait(600)
        simj = B.read_json(d / "sim.json")
        B.wait_until(lambda: B.all_delivered(B.metrics(http), simj["acked"]), 300, "the lake caught up", 0.1)
        time.sleep(1)
        a1, r1 = anon_kib(tg.pid), B.mem_kib(tg.pid)["VmRSS"]
        # warm: the same things twice more; state per thing must not grow. The first round
        # after the first one also pays for transient memory (a backlog's batches, SQLite's
        # cache, malloc arenas), so "flat once warm" compares the third round with the second,
        # each read 3 s after the lake caught up (the forwarder gives a backlog's buffers back
        # when idle)
        acked, anon = simj["acked"], []
        for r in (2, 3):
            simr = B.Proc(argv(d / f"sim{r}.json"), d / f"sim{r}.log")
            simr.wait(600)
            acked += B.read_json(d / f"sim{r}.json")["acked"]
            B.wait_until(lambda: B.all_delivered(B.metrics(http), acked), 300, "caught up", 0.1)
            time.sleep(0.5 if SCALE == "smoke" else 3)
            anon.append(anon_kib(tg.pid))
        a2, a3 = anon
        hwm = B.mem_kib(tg.pid)["VmHWM"]
        tg.stop()
        return dict(things=things, variant=variant, acked=acked,
                    anon_mib=dict(before=a0 / 1024, after=a1 / 1024, again=a2 / 1024, third=a3 / 1024),
                    rss_mib=dict(before=r0 / 1024, after=r1 / 1024, peak=hwm / 1024),
                    bytes_per_thing=(a1 - a0) * 1024 / things, again_growth_mib=(a2 - a1) / 1024,
                    third_growth_mib=(a3 - a2) / 1024)
    finally:
        B.stop_all()


# ---- registry ---------------------------------------------------------------------------------
def timed(argv):
    t0 = time.monotonic()
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=120)
    return time.monotonic() - t0, r


def run_registry(work, db):
    d = work / "registry"
    d.mkdir(parents=True)
    reg = copy_db(db, d / "reg.db")
    r = subprocess.run([BENCH_FLEET, "lookup", "--db", reg, "--things", str(F["things"]), "--total", str(F["registry"]),
                        "--seconds", "2"], capture_output=True, text=True, check=True)
    lookup = json.loads(r.stdout.strip().splitlines()[-1])
    tg = [B.BIN / "tidegate", "device", "--db", reg]
    mid = f"fleet-{F['registry'] // 2:06d}"
    cmds = dict(list=tg + ["list"], list_page=tg + ["list", "--limit", "50", "--after", mid],
                show=tg + ["show", mid], deactivate=tg + ["deactivate", mid], activate=tg + ["activate", mid])
    res = dict(things=F["registry"], plugin_checks_per_cpu_s=lookup["value"], plugin_us_per_check=lookup["us_per_check"],
               db_bytes=os.path.getsize(reg), cli={})
    for name, argv in cmds.items():
        dt, out = timed(argv)
        lines = out.stdout.count("\n")
        res["cli"][name] = dict(seconds=dt, rc=out.returncode, lines=lines,
                                err=out.stderr.strip()[-300:] if out.returncode else None)
    return res


# ---- rules -----------------------------------------------------------------------------------
def run_rules_once(d, rules_dir):
    d.mkdir(parents=True)
    broker, port = B.start_broker(d)
    try:
        tg, http = start_tidegate(d, port, rules_dir=rules_dir)
        a0 = anon_kib(tg.pid)
        c0 = B.cpu_seconds(tg.pid)
        t0 = time.monotonic()
        n = F["rules_msgs"]
        B.P["msgs"] = n
        sim = B.Proc(B.sim_argv(port, d, "sim", msgs=n), d / "sim.log")
        done = None
        deadline = t0 + 300
        while time.monotonic() < deadline:
            if B.all_delivered(B.metrics(http), n):
                done = time.monotonic()
                break
            time.sleep(0.05)
        c1 = B.cpu_seconds(tg.pid)
        sim.wait(30)
        m = B.metrics(http) or {}
        a1 = anon_kib(tg.pid)
        tg.stop()
        return dict(msgs_per_s=n / (done - t0) if done else 0, complete=done is not None,
                    cpu_s_per_1m=(c1 - c0) / n * 1e6, anon_mib=dict(before=a0 / 1024, after=a1 / 1024),
                    evaluated=m.get("tidegate_rules_evaluated_total"), matched=m.get("tidegate_rules_matched_total"))
    finally:
        B.stop_all()


def run_reload(d, rules_dir, reload):
    """steady load (load mode) for reload_seconds; with reload, the folder is reloaded
    (SIGHUP) every second. Ingest latency: device ts -> lake received_at."""
    d.mkdir(parents=True)
    broker, port = B.start_broker(d)
    try:
        tg, http = start_tidegate(d, port, rules_dir=rules_dir)
        secs = F["reload_seconds"]
        per_thing = 2000 / B.P["things"]  # 2,000 msg/s in total: the latency, not the rate, is measured
        sim = B.Proc(B.sim_argv(port, d, "sim", rate=per_thing, duration=secs), d / "sim.log")
        reloads = 0
        t_end = time.monotonic() + secs
        while sim.alive() and time.monotonic() < t_end:
            time.sleep(1.0)
            if reload:
                os.kill(tg.pid, signal.SIGHUP)
                reloads += 1
        sim.wait(60)
        simj = B.read_json(d / "sim.json")
        B.wait_until(lambda: B.all_delivered(B.metrics(http), simj["acked"]), 60, "the lake caught up", 0.05)
        time.sleep(0.3)
        m = B.metrics(http) or {}
        tg.stop()
        lat = []
        for line in B.lake_records(d / "lake"):
            r = json.loads(line)
            if isinstance(r.get("ts"), (int, float)) and "received_at" in r:
                lat.append(B.rfc3339_ms(r["received_at"]) - r["ts"])
        return dict(reloads=reloads, reloads_done=m.get("tidegate_rules_reloads_total"),
                    reload_seconds_last=m.get("tidegate_rules_reload_seconds"),
                    reload_seconds_max=m.get("tidegate_rules_reload_max_seconds"),
                    reload_cpu_seconds=m.get("tidegate_rules_reload_cpu_seconds"),
                    swap_seconds_max=m.get("tidegate_rules_reload_swap_max_seconds"),
                    acked=simj["acked"], lake=len(lat),
                    ingest_lat_ms=dict(p50=B.pct(lat, 0.5), p99=B.pct(lat, 0.99), max=max(lat) if lat else None))
    finally:
        B.stop_all()


def run_rules(work):
    few = fleet_rules.make_rules(work / "rules-10", 10)
    many = fleet_rules.make_rules(work / f"rules-{F['rules']}", F["rules"])
    res = dict(rules=F["rules"], msgs=F["rules_msgs"], few=[], many=[])
    for rep in range(F["rules_reps"]):  # alternated, so a neighbour's burst hits both alike
        res["few"].append(run_rules_once(work / f"rules-few-{rep}", few))
        res["many"].append(run_rules_once(work / f"rules-many-{rep}", many))
        log(f"  rep {rep + 1}: 10 rules {res['few'][-1]['cpu_s_per_1m']:.1f} CPU s/1M, {F['rules']} rules "
            f"{res['many'][-1]['cpu_s_per_1m']:.1f}")
    ratios = [m["cpu_s_per_1m"] / f["cpu_s_per_1m"] for f, m in zip(res["few"], res["many"]) if f["cpu_s_per_1m"]]
    res["cpu_ratio"] = statistics.median(ratios) if ratios else None
    rates = [m["msgs_per_s"] / f["msgs_per_s"] for f, m in zip(res["few"], res["many"]) if f["msgs_per_s"]]
    res["rate_ratio"] = statistics.median(rates) if rates else None
    log(f"  reloads of the {F['rules']}-rule folder under load, against no reloads")
    res["no_reload"] = run_reload(work / "reload-none", many, False)
    res["reload"] = run_reload(work / "reload", many, True)
    return res


# ---- report ----------------------------------------------------------------------------------
def fmt(v, nd=1):
    return "—" if v is None else f"{v:,.{nd}f}"


def verdict(ok):
    return "—" if ok is None else ("met" if ok else "MISSED")


def write_results(raw):
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "fleet.json").write_text(json.dumps(raw, indent=1) + "\n")
    L = [f"# Fleet benchmark ({SCALE} scale{', ' + raw['git'] if raw.get('git') else ''})", "",
         f"{raw['started']}, {raw['host']['nproc']} CPUs, machine busy {fmt(raw.get('machine_busy', 0) * 100, 0)} % "
         f"over the run (other work included). Scale: {F['things']} connections, {F['registry']}-thing registry, "
         f"{F['rules']} rules, edge state at {F['edge'][0]} and {F['edge'][1]} things.", ""]
    if raw.get("kept_rows"):
        L += ["Rows kept from an earlier run (`FLEET_ONLY` ran the others): "
              + ", ".join(f"{k} (at {v})" for k, v in raw["kept_rows"].items()) + ".", ""]
    c = raw.get("connections")
    if c:
        a, p, t = c["acl"], c["plugin"], c["tidegate"]
        L += ["## Connections", "",
              f"{c['things']} mTLS connections, one certificate each, started at {c['connect_rate']:.0f}/s; then "
              f"{c['steady_rate']:.0f} msg/s (50 % of the load-mode ceiling {c['ceiling_msgs_per_s']:.0f}) for "
              f"{c['seconds']:.0f} s.", "",
              "| | CONNACKs/s | CONNECT→CONNACK p50 / p99 ms | TCP start→CONNACK p50 / p99 ms | broker CPU ms / connect "
              "| broker CPU s / 1M msgs | broker RSS idle → connected MiB | steady msg/s | complete |",
              "|---|---|---|---|---|---|---|---|---|"]
        reps = list(zip(c.get("acl_reps") or [a], c.get("plugin_reps") or [p]))
        rows = [(f"CA + ACL file{f', rep {i + 1}' if len(reps) > 1 else ''}", ar) for i, (ar, _) in enumerate(reps)]
        rows += [(f"auth plugin, {c['registry']}-thing registry{f', rep {i + 1}' if len(reps) > 1 else ''}", pr)
                 for i, (_, pr) in enumerate(reps)]
        for name, r in rows:
            fl = r["fleet"]
            L.append(f"| {name} | {fmt(fl['connacks_per_s'], 0)} | {fmt(fl['connect_ms']['p50'])} / "
                     f"{fmt(fl['connect_ms']['p99'])} | {fmt(fl['full_connect_ms']['p50'])} / {fmt(fl['full_connect_ms']['p99'])}"
                     f" | {fmt(r['broker_cpu_ms_per_connect'], 2)} | {fmt(r['broker_cpu_s_per_1m'])} | "
                     f"{fmt(r['broker_rss_mib']['idle'])} → {fmt(r['broker_rss_mib']['connected'])} | "
                     f"{fmt(r['msgs_per_s'], 0)} | {r['complete']} |")
        p99 = p["fleet"]["connect_ms"]["p99"]
        L += ["", f"- end to end (tidegate behind the plugin / counting subscriber behind the plugin, same load): "
                  f"**{fmt(c['ratio_e2e'], 3)}** ({fmt(t['msgs_per_s'], 0)} / {fmt(p['msgs_per_s'], 0)} msg/s, complete "
                  f"{t['complete']}) — goal ≥ 0.95: {verdict(c['ratio_e2e'] >= 0.95 if c['ratio_e2e'] else None)}",
              f"- CONNECT p99 with the plugin: {fmt(p99)} ms at {c['connect_rate']:.0f} connects/s"
              f"{' (the middle of ' + str(len(reps)) + ' reps, the lower middle of an even count)' if len(reps) > 1 else ''}; with the ACL file "
              f"{fmt(a['fleet']['connect_ms']['p99'])} ms — goal ≤ 20 ms: "
              f"{verdict(p99 <= 20 if p99 is not None and p99 >= 0 else None)}",
              f"- broker CPU per connect: ACL file {fmt(a['broker_cpu_ms_per_connect'], 2)} ms (the TLS handshake, nearly "
              f"all of it OpenSSL), the plugin's addition {fmt(c.get('plugin_connect_ms'), 2)} ms (median of the per-rep "
              f"differences)",
              f"- plugin CPU per PUBLISH (broker CPU per message with it over without, minus 1"
              f"{'; median of ' + ', '.join(fmt(x * 100) for x in c['plugin_cpu_shares']) + ' %' if len(c.get('plugin_cpu_shares') or []) > 1 else ''}): "
              f"{fmt(c['plugin_cpu_share'] * 100 if c['plugin_cpu_share'] is not None else None)} % — goal ≤ 10 %: "
              f"{verdict(c['plugin_cpu_share'] <= 0.10 if c['plugin_cpu_share'] is not None else None)}",
              *([f"- CONNECT→CONNACK with the plugin at lower connect rates (one burst of {c['things']} each, "
                 f"plugin broker only; busy = broker CPU per connect × rate, the share of its one core the "
                 f"handshakes take):", "",
                 "| connects/s | CONNACKs/s | p50 / p99 ms | TCP start→CONNACK p99 ms | broker CPU ms / connect | busy |",
                 "|---|---|---|---|---|---|"]
                + [f"| {w['rate']} | {fmt(w['connacks_per_s'], 0)} | {fmt(w['connect_ms']['p50'])} / "
                   f"{fmt(w['connect_ms']['p99'])} | {fmt(w['full_connect_ms']['p99'])} | "
                   f"{fmt(w['broker_cpu_ms_per_connect'], 2)} | {fmt(w['broker_cpu_ms_per_connect'] * w['rate'] / 1e3, 2)} |"
                   for w in c["sweep"]] + [""] if c.get("sweep") else []),
              *([f"- a registry change under load (`run_recheck`): {c['recheck']['connected']} things connected "
                 f"through the plugin, {c['recheck']['rate']} msg/s for {c['recheck']['seconds']} s, `tidegate device "
                 f"deactivate` / `activate` of a thing not connected {c['recheck']['changes']} times: subscriber latency "
                 f"p50 / p99 / max {fmt(c['recheck']['lat_ms']['p50'], 2)} / {fmt(c['recheck']['lat_ms']['p99'])} / "
                 f"{fmt(c['recheck']['lat_ms']['max'])} ms, {c['recheck']['received']:,} of {c['recheck']['acked']:,} "
                 f"received; the plugin's passes (things, ms of work, slices, ms from start to end): "
                 + ", ".join(f"{x['things']} / {fmt(x['work_ms'])} / {x['slices']} / {x['wall_ms']}"
                             for x in c['recheck']['passes'])] if c.get("recheck") else []),
              f"- tidegate RssAnon {fmt(t['tidegate_anon_mib']['before'])} → {fmt(t['tidegate_anon_mib']['after'])} MiB with "
              f"{c['things']} things connected and publishing: {fmt(t['tidegate_bytes_per_thing'], 0)} B per thing; "
              f"tidegate CPU {fmt(t['tidegate_cpu_s_per_1m'])} s / 1M msgs", ""]
    e = raw.get("edge")
    if e:
        L += ["## Edge state per thing", "", "Two messages from each of N distinct things over 4 loadgen connections, "
              "then two more from each, twice (warm: RssAnon 3 s after the lake caught up each time); a fresh daemon per row: schemas only (ingest and dedupe), plus the shipped "
              "rules (alert state), plus `rules/aggregates/aggregates.json` (the default set-up, the goal's).", "",
              "| things | daemon | RssAnon before → after → again → third MiB | VmRSS after / peak MiB | bytes / thing "
              "| goal ≤ 1 KiB | flat once warm (third − again) |",
              "|---|---|---|---|---|---|---|"]
        for r in e:
            third = r["anon_mib"].get("third")
            L.append(f"| {r['things']:,} | {r['variant']} | {fmt(r['anon_mib']['before'])} → {fmt(r['anon_mib']['after'])} → "
                     f"{fmt(r['anon_mib']['again'])}{' → ' + fmt(third) if third is not None else ''} | "
                     f"{fmt(r['rss_mib']['after'])} / {fmt(r['rss_mib']['peak'])} | "
                     f"{fmt(r['bytes_per_thing'], 0)} | {verdict(r['bytes_per_thing'] <= 1024)} | "
                     f"{fmt(r.get('third_growth_mib'))} MiB |")
        L.append("")
    g = raw.get("registry")
    if g:
        L += ["## Registry", "", f"{g['things']:,} things with a certificate each ({g['db_bytes'] / B.MIB:.1f} MiB). "
              f"Plugin checks (fingerprint → identity → attributes): **{fmt(g['plugin_checks_per_cpu_s'], 0)} per CPU "
              f"second** ({fmt(g['plugin_us_per_check'], 1)} µs each).", "",
              "| `tidegate device` | seconds | rc | lines | goal ≤ 1 s |", "|---|---|---|---|---|"]
        for k, v in g["cli"].items():
            L.append(f"| {k} | {v['seconds']:.3f} | {v['rc']} | {v['lines']} | {verdict(v['seconds'] <= 1 and v['rc'] == 0)} |")
        L.append("")
    r = raw.get("rules")
    if r:
        few = statistics.median(x["cpu_s_per_1m"] for x in r["few"])
        many = statistics.median(x["cpu_s_per_1m"] for x in r["many"])
        rl, nr = r["reload"], r["no_reload"]
        L += ["## Rules", "",
              f"10 vs {r['rules']} rules (the shipped ones plus `tests/bench/fleet_rules.py`'s mix: 1 in 20 reads "
              f"device telemetry with a rarely true WHERE, the rest other topics), {r['msgs']:,} messages in load mode, "
              f"alternated {len(r['few'])}x.", "",
              f"- tidegate CPU per 1M messages: 10 rules {fmt(few)} s, {r['rules']} rules {fmt(many)} s — ratio "
              f"**{fmt(r['cpu_ratio'], 3)}** (goal ≤ 1.2: {verdict(r['cpu_ratio'] <= 1.2 if r['cpu_ratio'] else None)}); "
              f"rate ratio {fmt(r['rate_ratio'], 3)}",
              f"- RssAnon after the run: 10 rules {fmt(r['few'][-1]['anon_mib']['after'])} MiB, {r['rules']} rules "
              f"{fmt(r['many'][-1]['anon_mib']['after'])} MiB",
              f"- reload of the {r['rules']}-rule folder (daemon's own timing, `tidegate_rules_reload_seconds`): last "
              f"{fmt((rl['reload_seconds_last'] or 0) * 1000)} ms, max {fmt((rl['reload_seconds_max'] or 0) * 1000)} ms "
              f"over {fmt(rl['reloads_done'], 0)} reloads (wall, on a thread at nice 10 beside ingest); the last one's CPU "
              f"{fmt((rl['reload_cpu_seconds'] or 0) * 1000)} ms — goal ≤ 200 ms (CPU): "
              f"{verdict(rl['reload_cpu_seconds'] <= 0.2 if rl['reload_cpu_seconds'] is not None else None)}; "
              f"the ingest loop stopped at most {fmt((rl['swap_seconds_max'] or 0) * 1000, 2)} ms to swap a set in",
              f"- ingest latency (device ts → lake received_at, ms) at 2,000 msg/s: without reloads p50 / p99 / max "
              f"{fmt(nr['ingest_lat_ms']['p50'])} / {fmt(nr['ingest_lat_ms']['p99'])} / {fmt(nr['ingest_lat_ms']['max'])}; "
              f"reloading every second {fmt(rl['ingest_lat_ms']['p50'])} / {fmt(rl['ingest_lat_ms']['p99'])} / "
              f"{fmt(rl['ingest_lat_ms']['max'])}; every message in the lake: {rl['lake'] >= rl['acked']}", ""]
    (OUT / "fleet.md").write_text("\n".join(L) + "\n")
    print("\n".join(L))


def main():
    import datetime
    nofile = raise_nofile(2 * F["things"] + 1024)
    work = Path(tempfile.mkdtemp(prefix="tg-fleet-"))
    raw = dict(scale=SCALE, params=F, nofile=nofile,
               started=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               host=dict(nproc=os.cpu_count(), uname=" ".join(os.uname())),
               git=subprocess.run(["git", "-C", REPO, "describe", "--always", "--dirty"], capture_output=True,
                                  text=True).stdout.strip())
    prev_path = OUT / "fleet.json"
    if ONLY and prev_path.exists():  # a partial run keeps the other rows of the last one
        prev = json.loads(prev_path.read_text())
        if prev.get("scale") == SCALE:
            for k in ("connections", "registry", "rules", "edge"):
                if k in prev and not wanted(k):
                    raw[k] = prev[k]
                    # a row the last run kept itself was measured where that run says
                    raw.setdefault("kept_rows", {})[k] = prev.get("kept_rows", {}).get(k, prev.get("git"))
    log(f"fleet benchmark, {SCALE} scale, {F}, RLIMIT_NOFILE {nofile}, work dir {work}")
    if nofile < F["things"] + 256:
        raise SystemExit(f"fleet: RLIMIT_NOFILE {nofile} < {F['things'] + 256}: raise it (ulimit -Hn) or lower FLEET_THINGS")
    sys0 = B.sys_cpu()
    try:
        db = None
        if wanted("connections") or wanted("registry"):
            made, db = ensure_fleet(F["things"], F["registry"])
            log(f"certificates: {made['made']} made, {made['kept']} cached; registry {db.name}")
        if wanted("registry"):
            log(f"registry: {F['registry']} things")
            raw["registry"] = run_registry(work, db)
        if wanted("connections"):
            raw["connections"] = run_connections(work, db)
        if wanted("rules"):
            log(f"rules: 10 vs {F['rules']}")
            raw["rules"] = run_rules(work)
        if wanted("edge"):
            raw["edge"] = []
            # the breakdown at the smaller count, the whole at both
            for k, variant in [(F["edge"][0], v) for v in EDGE_VARIANTS] + [(F["edge"][1], "+ aggregates")]:
                log(f"edge state: {k} things, {variant}")
                raw["edge"].append(run_edge(work, k, variant))
                log(f"  {raw['edge'][-1]['bytes_per_thing']:.0f} B per thing")
    finally:  # what was measured is written even when a later row failed
        B.stop_all()
        raw["machine_busy"] = B.busy_frac(sys0, B.sys_cpu())
        if os.environ.get("BENCH_KEEP") == "1":
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
        write_results(raw)
    c = raw.get("connections")
    if c and SCALE != "smoke" and not ONLY and c["tidegate"]["complete"]:
        import history  # issue 19: the fleet's end-to-end ratio per commit beside make bench's rows
        history.append(f"fleet-{SCALE}", c["plugin"]["msgs_per_s"], c["tidegate"]["msgs_per_s"],
                       c["tidegate"]["tidegate_cpu_s_per_1m"], c["tidegate"]["tidegate_anon_mib"]["after"],
                       raw["machine_busy"])
    return raw


if __name__ == "__main__":
    main()
