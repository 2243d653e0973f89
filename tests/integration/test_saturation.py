"""Saturation (issue 18): twenty devices, each on its own mTLS connection, publishing as
fast as the broker acknowledges them. The daemon must acknowledge every commit group at
once (one TLS record of PUBACKs the broker reads in one pass), read no further ahead than
its bound on unacknowledged messages, and so keep the broker's and its own memory flat; a
kill -9 in the middle of it may store again, under new msg_ids, at most that bound."""
import json
import time

import pytest

import harness
from harness import read_lake, wait_until

THINGS = 20
# Growth allowed once warm (after WARM s). Before the fix the broker grew ~5 MB/s and
# tidegate ~1.4 MB/s under this load; with it both stay within a few hundred KiB.
WARM = 5.0
BROKER_GROWTH_MB = 16.0
DAEMON_GROWTH_MB = 6.0


@pytest.fixture(scope="module")
def certs20(tmp_path_factory):
    return harness.Certs(tmp_path_factory.mktemp("certs20"), things=THINGS)


@pytest.fixture
def broker20(certs20, tmp_path):
    b = harness.Broker(certs20, tmp_path).start()
    yield b
    b.stop()


def keys_to_ids(recs):
    out = {}
    for r in recs:
        out.setdefault((r["thing"], r["seq"]), set()).add(r["msg_id"])
    return out


def growth(samples, key):
    vals = [s[key] for s in samples if s["t"] >= WARM and s.get(key) is not None]
    assert len(vals) >= 5, f"too few samples of {key}: {samples}"
    return max(vals) - vals[0], vals


@pytest.mark.slow
def test_saturation_acknowledges_at_once_and_memory_stays_flat(broker20, daemons, tmp_path):
    d = daemons(broker20)
    sim, summary = harness.Sim.start(broker20, tmp_path, "--things", THINGS, "--max-rate", "--duration", 30,
                                     "--qos", 1, "--seed", 3, "--quiet")
    smp = harness.Sampler(1.0, pids={"broker": broker20.proc.p.pid, "daemon": d.proc.p.pid}, daemon=d,
                          metrics=["tidegate_broker_unacked", "tidegate_broker_unacked_max",
                                   "tidegate_messages_received_total"]).start()
    assert sim.wait(120) == 0, sim.text()
    samples = smp.stop()
    acked = json.loads(summary.read_text())["acked"]
    assert acked > 60000, f"load too small to saturate anything: {acked}"
    wait_until(lambda: d.metric("tidegate_messages_accepted_total", 0) >= acked and
               d.metric("tidegate_outbox_rows", 1) == 0, 60, what="everything accepted and delivered")
    bgrow, bvals = growth(samples, "broker")
    dgrow, dvals = growth(samples, "daemon")
    unacked_max = max(s["tidegate_broker_unacked"] for s in samples if s.get("tidegate_broker_unacked") is not None)
    bound = samples[-1]["tidegate_broker_unacked_max"]
    print(f"saturation: {acked} msgs, broker RSS {bvals[0]:.1f}->{max(bvals):.1f} MB, tidegate RSS "
          f"{dvals[0]:.1f}->{max(dvals):.1f} MB, unacked max sampled {unacked_max:.0f} (bound {bound:.0f})")
    assert bgrow < BROKER_GROWTH_MB, f"broker RSS grew {bgrow:.1f} MB under saturation: {bvals}"
    assert dgrow < DAEMON_GROWTH_MB, f"tidegate RSS grew {dgrow:.1f} MB under saturation: {dvals}"
    assert unacked_max <= bound
    recs = read_lake(d.lake)
    keys = keys_to_ids(recs)
    assert len(keys) == acked, f"{acked - len(keys)} acknowledged messages missing from the lake"


@pytest.mark.slow
def test_kill9_mid_saturation_stores_again_at_most_the_bound(broker20, daemons, tmp_path):
    d = daemons(broker20)
    sim, summary = harness.Sim.start(broker20, tmp_path, "--things", THINGS, "--max-rate", "--duration", 20,
                                     "--qos", 1, "--seed", 5, "--quiet")
    wait_until(lambda: d.metric("tidegate_messages_received_total", 0) > 50000, 40, what="saturation under way")
    bound = d.metric("tidegate_broker_unacked_max")
    d.kill9()
    time.sleep(0.5)  # the outage under test: restarted half a second later, as in the report
    d.start()
    assert sim.wait(120) == 0, sim.text()
    acked = json.loads(summary.read_text())["acked"]
    wait_until(lambda: d.metric("tidegate_outbox_rows", 1) == 0 and
               len(keys_to_ids(read_lake(d.lake))) >= acked, 90, what="backlog drained")
    keys = keys_to_ids(read_lake(d.lake))
    again = sum(len(ids) - 1 for ids in keys.values())
    print(f"kill -9 mid-saturation: {acked} acknowledged to devices, {len(keys)} distinct in the lake, "
          f"{again} stored again under a new msg_id (bound {bound:.0f})")
    assert len(keys) == acked, f"{acked - len(keys)} acknowledged messages lost"
    assert again <= bound, f"{again} records stored twice, more than the bound {bound}"


def test_broker_drops_past_its_queue_cap_are_counted_in_metrics(certs, daemons, tmp_path):
    """Past max_queued_messages the broker drops messages it has acknowledged to devices:
    loss only the broker sees. tidegate's /metrics must show exactly how many (from $SYS)."""
    b = harness.Broker(certs, tmp_path, extra_args=["--max-queued", "2000"]).start()
    try:
        d = daemons(b)
        d.stop()  # the persistent session stays, with nobody to deliver to
        s = harness.Sim.run(b, tmp_path, "--things", 5, "--count", 1000, "--rate", 1000, "--qos", 1, "--quiet")
        assert s["acked"] == 5000
        d.start()
        wait_until(lambda: d.metric("tidegate_messages_received_total", 0) >= 2000 and
                   d.metric("tidegate_outbox_rows", 1) == 0, 30, what="the queue delivered")
        # $SYS is refreshed every sys_interval (10 s)
        wait_until(lambda: d.metric("tidegate_broker_dropped_messages", -1) > 0, 25, what="the broker's drop count")
        received = d.metric("tidegate_messages_received_total")
        dropped = d.metric("tidegate_broker_dropped_messages")
        print(f"queue cap 2000: {s['acked']} acknowledged to devices, {received:.0f} delivered, {dropped:.0f} dropped")
        assert received + dropped == s["acked"]
        assert "Outgoing messages are being dropped" in b.log()
    finally:
        b.stop()
