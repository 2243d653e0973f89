#!/usr/bin/python3
"""What the operator's console costs the daemon (issue 15), in figures that hold on a busy box.

  endpoints OUT [N] [RATE]  CPU per call of each endpoint the page polls: the daemon's
                            connection thread (one keep-alive connection, so a round of N calls
                            runs on one thread) and the whole process, over N calls (200), after
                            50,000 messages, idle and then under device_sim at RATE msg/s per
                            thing (50, i.e. 5,000 msg/s); then the event stream's thread over 10 s
  windows OUT [PAIRS] [S]   one daemon under a max-rate load, the benchmark's watcher (an
                            event-stream client and an API poll a second, bench.console_watcher)
                            switched on and off in alternating S-second windows (ABBA order,
                            PAIRS pairs): delivered msg/s and daemon CPU s per 1M messages per
                            window, and the part spent by threads that ended within the window
                            (the watcher's connections: one thread per connection)

Same broker, certificates, configuration and helpers as bench.py (B selects the build, as
there). Nothing is written under bench/results; OUT is a new folder for the run's files.
    B=build /usr/bin/python3 tests/bench/console_cost.py endpoints /tmp/cc-endpoints
    B=build /usr/bin/python3 tests/bench/console_cost.py windows /tmp/cc-windows 6 5
"""
from http.client import HTTPConnection
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench as b  # noqa: E402

TCK = os.sysconf("SC_CLK_TCK")
PATHS = ["/api/devices", "/api/sinks", "/api/alerts", "/api/rules", "/api/status", "/api/shadows?limit=50",
         "/api/series?thing=dev-0001&field=temperature&since=-5m&step=10s", "/metrics"]


def threads(pid):
    """{tid: (comm, cpu seconds)} of the live threads"""
    out = {}
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            comm = open(f"/proc/{pid}/task/{t}/comm").read().strip()
            f = open(f"/proc/{pid}/task/{t}/stat").read().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        out[int(t)] = (comm, (int(f[11]) + int(f[12])) / TCK)
    return out


def start(d):
    d.mkdir(parents=True)
    _, port = b.start_broker(d)
    http = b.free_port()
    tf = d / "api-token"
    subprocess.run([b.BIN / "tidegate", "token", "new", tf], check=True, capture_output=True)
    token = tf.read_text().strip()
    conf = b.tidegate_conf(d, port, http, d / "lake", d / "data")
    conf.write_text(conf.read_text().replace("[http]\n", f"[http]\ntoken_file = {tf}\n"))
    tg = b.Proc([b.BIN / "tidegate", "run", "-c", conf], d / "tidegate.log")
    b.wait_until(lambda: (b.metrics_tok(http, token) or {}).get("tidegate_broker_connected") == 1 or not tg.alive(),
                 15, "tidegate connected")
    time.sleep(0.3)  # SUBSCRIBE follows CONNACK
    return tg, port, http, token


def new_conn_thread(pid, before):
    new = [t for t, (comm, _) in threads(pid).items() if t not in before and comm.startswith("MHD-conn")]
    if len(new) != 1:
        raise RuntimeError(f"expected one new connection thread, found {len(new)}")
    return new[0]


def round_of_calls(pid, http, token, n, label):
    before = threads(pid)
    c = HTTPConnection("127.0.0.1", http, timeout=10)
    hdr = {"Authorization": f"Bearer {token}"}
    c.request("GET", "/api/status", headers=hdr)
    c.getresponse().read()
    tid = new_conn_thread(pid, before)
    out = {}
    for p in PATHS:
        t0, c0, w0 = threads(pid)[tid][1], b.cpu_seconds(pid), time.monotonic()
        size = 0
        for _ in range(n):
            c.request("GET", p, headers=hdr)
            r = c.getresponse()
            body = r.read()
            size = len(body)
            if r.status != 200:
                raise RuntimeError(f"{p}: {r.status} {body[:200]!r}")
        t1, c1, w1 = threads(pid)[tid][1], b.cpu_seconds(pid), time.monotonic()
        out[p] = dict(thread_ms=1000 * (t1 - t0) / n, process_ms=1000 * (c1 - c0) / n, wall_ms=1000 * (w1 - w0) / n, bytes=size)
        print(f"{label:5} {p[:44]:44} thread {out[p]['thread_ms']:6.3f} ms  process {out[p]['process_ms']:6.3f} ms  "
              f"wall {out[p]['wall_ms']:6.2f} ms  {size} B", flush=True)
    c.close()
    return out


def event_stream(pid, http, token, secs):
    before = threads(pid)
    s = socket.create_connection(("127.0.0.1", http), timeout=2)
    s.sendall(f"GET /api/events HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
    s.recv(65536)
    tid = new_conn_thread(pid, before)
    c0, t0 = threads(pid)[tid][1], time.monotonic()
    frames = 0
    while time.monotonic() < t0 + secs:
        try:
            frames += s.recv(65536).count(b"\n\n")
        except socket.timeout:
            continue
    c1 = threads(pid)[tid][1]
    s.close()
    print(f"events {secs} s: thread {1000 * (c1 - c0):.1f} ms, {frames} frames", flush=True)
    return dict(thread_ms=1000 * (c1 - c0), frames=frames, seconds=secs)


def endpoints(d, n=200, rate=50.0):
    tg, port, http, token = start(d)
    fill = b.Proc(b.sim_argv(port, d, "fill", msgs=50000), d / "fill.log")
    fill.wait(120)
    b.wait_until(lambda: b.all_delivered(b.metrics_tok(http, token), 50000), 60, "50,000 delivered")
    res = dict(n=n, rate_per_thing=rate)
    res["idle"] = round_of_calls(tg.pid, http, token, n, "idle")
    res["events_idle"] = event_stream(tg.pid, http, token, 10)
    b.Proc(b.sim_argv(port, d, "steady", rate=rate, duration=600), d / "steady.log")
    time.sleep(3)
    res["load"] = round_of_calls(tg.pid, http, token, n, "load")
    res["events_load"] = event_stream(tg.pid, http, token, 10)
    return res


def windows(d, pairs=6, secs=5.0):
    tg, port, http, token = start(d)
    sim = b.Proc(b.sim_argv(port, d, "sim", msgs=100 * 40000), d / "sim.log")
    time.sleep(3)
    rows = []
    for i in range(2 * pairs):
        on = (i % 4) in (1, 2)  # off on on off, ...
        stop, stats = threading.Event(), dict(sse_frames=0, api_ok=0, api_err=0, poll_s=[])
        ws = b.console_watcher(http, token, stop, stats) if on else []
        th0, m0, c0, t0 = threads(tg.pid), b.metrics_tok(http, token), b.cpu_seconds(tg.pid), time.monotonic()
        time.sleep(secs)
        m1, c1, t1, th1 = b.metrics_tok(http, token), b.cpu_seconds(tg.pid), time.monotonic(), threads(tg.pid)
        stop.set()
        for t in ws:
            t.join(5)
        n = max(1, b.sink_ok(m1) - b.sink_ok(m0))
        live = sum(cpu - th0.get(t, (None, 0))[1] for t, (_, cpu) in th1.items())
        rows.append(dict(on=on, msgs_per_s=n / (t1 - t0), cpu_s_per_1m=(c1 - c0) / n * 1e6,
                         ended_threads_cpu_s_per_1m=((c1 - c0) - live) / n * 1e6, api_ok=stats["api_ok"]))
        r = rows[-1]
        print(f"{'on ' if on else 'off'} {r['msgs_per_s']:7.0f} msg/s  {r['cpu_s_per_1m']:5.1f} CPU s/1M  "
              f"ended threads {r['ended_threads_cpu_s_per_1m']:5.2f} CPU s/1M  api calls {r['api_ok']}", flush=True)
        if not sim.alive():
            print("device_sim ended before the last window")
            break
    med = lambda on, k: statistics.median([r[k] for r in rows if r["on"] == on])
    summary = dict(rate_on_over_off=med(True, "msgs_per_s") / med(False, "msgs_per_s"),
                   cpu_s_per_1m_on=med(True, "cpu_s_per_1m"), cpu_s_per_1m_off=med(False, "cpu_s_per_1m"),
                   ended_threads_on=med(True, "ended_threads_cpu_s_per_1m"), ended_threads_off=med(False, "ended_threads_cpu_s_per_1m"))
    print(" ".join(f"{k} {v:.3f}" for k, v in summary.items()))
    return dict(rows=rows, summary=summary)


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in ("endpoints", "windows"):
        sys.exit(__doc__)
    d = Path(sys.argv[2]).resolve()
    args = sys.argv[3:]
    try:
        if sys.argv[1] == "endpoints":
            res = endpoints(d, int(args[0]) if args else 200, float(args[1]) if len(args) > 1 else 50.0)
        else:
            res = windows(d, int(args[0]) if args else 6, float(args[1]) if len(args) > 1 else 5.0)
        (d / "result.json").write_text(json.dumps(res, indent=1))
    finally:
        b.stop_all()


if __name__ == "__main__":
    main()
