"""The outbox on disk (issue 21): under continuous ingest the WAL stays under its bound
(it restarts between group commits instead of growing for as long as ingest runs), and
[outbox] max_bytes bounds the three files (database + WAL + WAL index) with drop_oldest
counting exactly what it drops, while a working sink still gets everything."""
import json
import sqlite3

import pytest

import harness
from harness import read_lake, wait_until

MIB = 1 << 20
THINGS = 20
TOTAL = 'tidegate_outbox_disk_bytes{file="total"}'


@pytest.fixture(scope="module")
def certs20(tmp_path_factory):
    return harness.Certs(tmp_path_factory.mktemp("certs20"), things=THINGS)


@pytest.fixture
def broker20(certs20, tmp_path):
    b = harness.Broker(certs20, tmp_path).start()
    yield b
    b.stop()


def distinct(recs):
    return {(r["thing"], r["seq"]) for r in recs}


def outbox_files(d):
    data = d.dir / "data"
    return {"db": data / "outbox.db", "wal": data / "outbox.db-wal", "shm": data / "outbox.db-shm"}


@pytest.mark.slow
def test_wal_stays_bounded_and_rss_flat_at_5k_per_second(broker20, daemons, tmp_path):
    d = daemons(broker20)
    wal_bound = d.metric("tidegate_outbox_wal_max_bytes")
    assert wal_bound == 64 * MIB
    # 20 things x 250 msg/s = 5,000 msg/s for 60 s
    sim, summary = harness.Sim.start(broker20, tmp_path, "--things", THINGS, "--rate", 250, "--duration", 60,
                                     "--qos", 1, "--seed", 7, "--quiet")
    smp = harness.Sampler(1.0, pids={"daemon": d.proc.p.pid}, files=outbox_files(d)).start()
    assert sim.wait(150) == 0, sim.text()
    samples = smp.stop()
    acked = json.loads(summary.read_text())["acked"]
    assert acked >= 250000, f"the load fell short of 5k msg/s: {acked} in 60 s"
    wait_until(lambda: d.metric("tidegate_outbox_rows", 1) == 0 and len(distinct(read_lake(d.lake))) >= acked, 60,
               what="everything delivered")
    peak = d.metric("tidegate_outbox_wal_peak_bytes")
    wal = [s["wal"] for s in samples]
    rss = [s["daemon"] for s in samples if s["t"] >= 10 and s["daemon"] is not None]
    restarts = d.metric("tidegate_outbox_wal_restarts_total")
    print(f"5k msg/s for 60 s: WAL file max {max(wal) / MIB:.1f} MiB (bound {wal_bound / MIB:.0f}), "
          f"WAL peak {peak / MIB:.1f} MiB, {restarts:.0f} restarts, tidegate RSS {rss[0]:.1f}..{max(rss):.1f} MB")
    # before the fix: 322 MB after 20 s, growing ~17 MB/s
    assert max(wal) <= wal_bound, f"WAL file reached {max(wal)} bytes"
    assert peak <= wal_bound
    assert restarts >= 5, "the WAL never started over"
    assert max(rss) - rss[0] < 4.0, f"tidegate RSS grew: {rss}"


@pytest.mark.slow
def test_dead_sink_max_bytes_bounds_the_disk_and_drops_are_counted(broker20, daemons, tmp_path):
    cap = 64 * MIB
    dead_port = harness.free_port()  # nothing listens there: every PutRecords is refused
    d = daemons(broker20, extra=f"""
[ingest]
default_sinks = lake, dead
[outbox]
max_bytes = 64M
full_policy = drop_oldest
[sink dead]
type = kinesis
stream = dead
endpoint = http://127.0.0.1:{dead_port}
access_key_id = AKIDEXAMPLE
secret_access_key = not-a-secret
timeout = 2s
""")
    wal_bound = d.metric("tidegate_outbox_wal_max_bytes")
    assert wal_bound == cap // 4
    sim, summary = harness.Sim.start(broker20, tmp_path, "--things", THINGS, "--max-rate", "--duration", 60,
                                     "--qos", 1, "--seed", 9, "--quiet")
    smp = harness.Sampler(0.5, pids={"daemon": d.proc.p.pid}, files=outbox_files(d)).start()
    assert sim.wait(150) == 0, sim.text()
    samples = smp.stop()
    acked = json.loads(summary.read_text())["acked"]
    wait_until(lambda: d.metric("tidegate_messages_accepted_total", 0) >= acked and
               len(distinct(read_lake(d.lake))) >= acked, 60, what="everything accepted and in the lake")
    m = d.metrics()
    d.stop()
    disk = [s["db"] + s["wal"] + s["shm"] for s in samples]
    wal = [s["wal"] for s in samples]
    accepted, dropped = m["tidegate_messages_accepted_total"], m["tidegate_outbox_dropped_total"]
    con = sqlite3.connect(f"file:{outbox_files(d)['db']}?mode=ro", uri=True)
    try:
        (held,) = con.execute("SELECT count(*) FROM outbox WHERE sink = (SELECT id FROM sinks WHERE name = 'dead')")\
            .fetchone()
        (json_bytes,) = con.execute("SELECT sum(length(payload)) FROM outbox").fetchone()
        (pages, psize, free) = (con.execute("PRAGMA page_count").fetchone()[0],
                                con.execute("PRAGMA page_size").fetchone()[0],
                                con.execute("PRAGMA freelist_count").fetchone()[0])
    finally:
        con.close()
    per_record = (pages - free) * psize / json_bytes
    print(f"dead sink, {acked} msgs: disk max {max(disk) / MIB:.1f} MiB (cap {cap / MIB:.0f}), WAL max "
          f"{max(wal) / MIB:.1f} MiB (bound {wal_bound / MIB:.0f}), {held:.0f} held + {dropped:.0f} dropped = "
          f"{accepted:.0f} accepted, database {per_record:.2f} bytes per record JSON byte")
    assert acked > 200000, f"load too small to reach the cap: {acked}"
    assert dropped > 0, "the cap was never reached"
    assert max(disk) <= cap, f"the outbox's files reached {max(disk)} bytes"
    assert max(wal) <= wal_bound
    # every accepted record is either still held for the dead sink or counted as dropped
    assert held + dropped == accepted
    # ... and the working sink got every acknowledged message, drops or not
    assert len(distinct(read_lake(d.lake))) == acked
    assert per_record <= 2.5
