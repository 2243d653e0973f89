"""Issue 13 — systemd's service protocol, seen from a fake NOTIFY_SOCKET.

The test plays systemd's part: it binds an AF_UNIX datagram socket, starts the daemon with
NOTIFY_SOCKET and WATCHDOG_USEC pointing at it, and reads what libsystemd's sd_notify()
sends: READY=1 only once the ops HTTP port answers, STATUS= lines with the broker state,
the accepted rate and the outbox backlog, WATCHDOG=1 every half period, STOPPING=1.

Hangs are real ones, not test hooks: a forwarder stuck in a send to an upstream that
accepts the connection and never answers (a Kinesis sink pointed at a black hole, with a
60 s timeout), and an ingest loop stuck behind a writer lock another process holds on
the outbox. Either stops the keep-alives; both recover when the hang ends.
"""
import re
import socket
import sqlite3
import threading
import time
from pathlib import Path

import harness
from harness import read_lake, wait_until


class Listener:
    """A socket served by a thread running self._run until stop()."""

    def __init__(self, sock, address):
        self.sock = sock
        self.sock.bind(address)
        self.sock.settimeout(0.2)
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)

    def stop(self):
        self.running = False
        self.thread.join(5)
        self.sock.close()


class NotifySocket(Listener):
    """systemd's end: collects (monotonic time, datagram) pairs from a reader thread."""

    def __init__(self, path):
        super().__init__(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM), str(path))
        self.path = str(path)
        self.msgs = []
        self.lock = threading.Lock()
        self.thread.start()

    def _run(self):
        while self.running:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.msgs.append((time.monotonic(), data.decode(errors="replace")))

    def close(self):
        self.stop()

    def env(self, watchdog_s):
        return {"NOTIFY_SOCKET": self.path, "WATCHDOG_USEC": str(int(watchdog_s * 1_000_000))}

    def all(self):
        with self.lock:
            return list(self.msgs)

    def find(self, pred, since=0.0):
        return [(t, m) for t, m in self.all() if t >= since and pred(m)]

    def pings(self, since=0.0, until=float("inf")):
        return [t for t, m in self.all() if since <= t <= until and m == "WATCHDOG=1"]

    def statuses(self, since=0.0):
        return [m.split("STATUS=", 1)[1] for t, m in self.all() if t >= since and "STATUS=" in m]


class BlackHole(Listener):
    """A TCP server on 127.0.0.1 that accepts and reads, and never answers."""

    def __init__(self):
        super().__init__(socket.socket(), ("127.0.0.1", 0))
        self.srv = self.sock
        self.srv.listen(16)
        self.port = self.srv.getsockname()[1]
        self.conns = []
        self.received = b""
        self.thread.start()

    def _run(self):
        while self.running:
            try:
                c, _ = self.srv.accept()
                c.settimeout(0.05)
                self.conns.append(c)
            except (socket.timeout, OSError):
                pass
            for c in list(self.conns):
                try:
                    self.received += c.recv(65536)
                except (socket.timeout, OSError):
                    pass

    def release(self):
        """Stop listening and close every connection: the stuck send fails at once."""
        self.stop()
        for c in self.conns:
            c.close()


def _notify(tmp_path):
    # sun_path is short (108 bytes): keep the socket near the root of the test's folder
    return NotifySocket(Path(tmp_path) / "notify.sock")


def _pub_one(broker, certs, thing="dev-0001", temp=21.0):
    msg = '{"sensor_id": "%s", "ts": %d, "temperature": %.1f}' % (thing, int(time.time() * 1000), temp)
    r = harness.mosquitto_pub(broker, *certs.thing(thing), f"devices/{thing}/telemetry", [msg])
    assert r.returncode == 0, r.stderr


def test_ready_status_watchdog_stopping(broker, daemons, certs, tmp_path):
    ns = _notify(tmp_path)
    try:
        rules = harness.REPO / "rules"
        d = daemons(broker, start=False, extra=f"[ingest]\nrules_dir = {rules}\nschemas_dir = {rules / 'schemas'}\n")
        nrules = len(list(rules.glob("*.json")))
        t0 = time.monotonic()
        d.start(wait_connected=False, env=ns.env(1.0))
        (t_ready, ready), = wait_until(lambda: ns.find(lambda m: m.startswith("READY=1")), 30, what="READY=1")
        # READY=1 is sent once HTTP is bound: the port answers now
        status, _ = d.http("/metrics")
        assert status == 200
        assert f"STATUS=ready: outbox open, {nrules} rules, ops http port {d.http_port}" in ready, ready
        assert all(t >= t_ready for t in ns.pings()), "a keep-alive before READY=1"
        # the broker comes after READY and the status line says so
        wait_until(lambda: any(s.startswith("broker connected 127.0.0.1:%d" % broker.port) for s in ns.statuses()),
                   20, what="status: broker connected")
        # keep-alives every half period (0.5 s): over 3 s at least 3 (timing slack for sanitizers)
        t1 = time.monotonic()
        time.sleep(3.0)  # a measurement window, not a readiness wait
        n = len(ns.pings(since=t1, until=t1 + 3.0))
        assert n >= 3, (n, ns.all()[-20:])
        # the status line carries the accepted rate and the backlog
        summary = harness.Sim.run(broker, tmp_path, "--things", 3, "--count", 100, "--rate", 50, "--qos", 1,
                                  "--seed", 7)
        assert summary["acked"] >= 300, summary
        wait_until(lambda: len(read_lake(d.lake)) >= 300, 30, what="300 records in the lake")

        def rated():
            for s in ns.statuses(since=t1):
                m = re.search(r"accepted ([0-9.]+) msg/s; outbox backlog (\d+) rows", s)
                if m and float(m.group(1)) > 0:
                    return m
        m = wait_until(rated, 15, what="a status line with a non-zero accepted rate")
        assert float(m.group(1)) <= 300 / 0.5, m.group(0)
        t2 = time.monotonic()
        assert d.stop() == 0
        assert ns.find(lambda m: m.startswith("STOPPING=1"), since=t2), ns.all()[-5:]
        print(f"READY after {t_ready - t0:.2f}s; {n} keep-alives in 3 s; status: {ns.statuses()[-1]}")
    finally:
        ns.close()


KINESIS_STUCK = """
[ingest]
default_sinks = lake, stuck
[sink lake]
type = file
path = {{lake}}
[sink stuck]
type = kinesis
stream = tg
region = us-east-1
endpoint = http://127.0.0.1:{port}
access_key_id = AKIDTEST
secret_access_key = test-secret
timeout = 60s
retry_base = 100ms
retry_cap = 500ms
"""


def test_stuck_forwarder_stops_keepalives(broker, daemons, certs, tmp_path):
    hole = BlackHole()
    ns = _notify(tmp_path)
    try:
        d = daemons(broker, start=False, sinks=KINESIS_STUCK.format(port=hole.port))
        # a 2 s watchdog: a waiting forwarder shows life every second, so only a hang is silent
        d.start(env=ns.env(2.0))
        wait_until(lambda: ns.find(lambda m: m.startswith("READY=1")), 20, what="READY=1")
        t_ok = time.monotonic()
        wait_until(lambda: len(ns.pings(since=t_ok)) >= 3, 10, what="3 keep-alives while healthy")
        _pub_one(broker, certs)
        # the lake forwarder delivers; the Kinesis one is inside its send, waiting for an answer
        wait_until(lambda: len(read_lake(d.lake)) == 1, 10, what="the record in the lake")
        wait_until(lambda: b"PutRecords" in hole.received, 10, what="the PutRecords request at the black hole")
        t_stuck = time.monotonic()
        withheld = wait_until(lambda: ns.find(lambda m: "forwarder stuck silent for" in m, since=t_stuck), 10,
                              what="status: forwarder stuck")
        t_withheld = withheld[0][0]
        # two whole periods without a keep-alive: systemd would have fired
        wait_until(lambda: time.monotonic() >= t_withheld + 4.5, 6, interval=0.1, what="4.5 s after the stall")
        late = ns.pings(since=t_withheld + 0.1)
        assert late == [], f"keep-alives during the stall: {late}"
        assert "forwarder thread stuck, withholding the watchdog keep-alive" in d.log()
        # the hang ends (the upstream drops the connection): keep-alives resume
        hole.release()
        t_free = time.monotonic()
        wait_until(lambda: len(ns.pings(since=t_free)) >= 2, 10, what="keep-alives after the stall")
        print(f"stall seen {t_withheld - t_stuck:.2f}s after the request; "
              f"gap {min(ns.pings(since=t_free)) - max(ns.pings(until=t_withheld)):.1f}s")
    finally:
        hole.release() if hole.running else None
        ns.close()


def test_stuck_ingest_stops_keepalives(broker, daemons, certs, tmp_path):
    """Another process holds the outbox's write lock: the ingest loop waits in its commit
    (the busy handler polls for up to 5 s), sends no keep-alive meanwhile, and the message
    is still accepted once the lock is free."""
    ns = _notify(tmp_path)
    con = None
    try:
        d = daemons(broker, start=False)
        d.start(env=ns.env(1.0))
        wait_until(lambda: ns.find(lambda m: m.startswith("READY=1")), 20, what="READY=1")
        t_ok = time.monotonic()
        wait_until(lambda: len(ns.pings(since=t_ok)) >= 3, 10, what="3 keep-alives while healthy")
        con = sqlite3.connect(str(d.dir / "data" / "outbox.db"), timeout=10, isolation_level=None)
        con.execute("BEGIN EXCLUSIVE")
        t_lock = time.monotonic()
        _pub_one(broker, certs)
        # the ingest loop is now inside its commit: watch 3 s (three half periods)
        wait_until(lambda: time.monotonic() >= t_lock + 3.5, 5, interval=0.1, what="3.5 s of lock")
        pings = ns.pings(since=t_lock + 0.5, until=t_lock + 3.5)
        assert pings == [], f"keep-alives while the ingest loop was stuck: {pings}"
        con.execute("COMMIT")
        con.close()
        con = None
        t_free = time.monotonic()
        wait_until(lambda: len(ns.pings(since=t_free)) >= 2, 10, what="keep-alives after the lock")
        wait_until(lambda: len(read_lake(d.lake)) == 1, 15, what="the record in the lake")
    finally:
        if con:
            con.close()
        ns.close()
