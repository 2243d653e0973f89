"""Issue 17 — the `nats` sink: the outbox published into a NATS JetStream stream.

A real `nats-server -js` (2.9, Debian's) on a free loopback port with file storage in the
test dir (cloud_peers.NatsServer); the stream is created and read back over the NATS wire
protocol by cloud_peers.NatsClient, never by tidegate's code. Messages are counted in the
stream by their Nats-Msg-Id header, which must equal the record's msg_id.

Run: /usr/bin/python3 -m pytest -q tests/integration/test_bridge_nats.py
(TIDEGATE_BUILD=<build dir> for another build than build/rel).
"""
import json
import os
import re
import subprocess
from collections import Counter

import pytest

import cloud_peers
import harness
from harness import wait_until

STREAM = "TG"


def nats_sink(nats, extra=""):
    return f"""
[sink js]
type = nats
url = {nats.url}
stream = {STREAM}
retry_base = 100ms
retry_cap = 1s
{extra}
"""


def sink_metric(d, what, name="js", default=0):
    return d.metric(f'tidegate_sink_records_total{{sink="{name}",outcome="{what}"}}', default)


def daemon_log(d):
    return (d.dir / "tidegate.log").read_text(errors="replace")


def stream_records(nats):
    """(messages, Counter of Nats-Msg-Id); checks header and payload agree on the id."""
    with nats.client() as c:
        msgs = c.stream_messages(STREAM)
    for m in msgs:
        assert json.loads(m["data"])["msg_id"] == m["headers"].get("Nats-Msg-Id"), m["headers"]
    return msgs, Counter(m["headers"]["Nats-Msg-Id"] for m in msgs)


def jetstream_duplicates(log):
    """What JetStream reported as duplicates (re-sent msg_ids it dropped), from the log: the
    sink's running total, per daemon process (the log folds identical consecutive lines, so
    the per-batch figures alone could undercount)."""
    return sum(max((int(x) for x in re.findall(r"Nats-Msg-Id\)\" duplicates=\d+ total=(\d+)", run)), default=0)
               for run in log.split("msg=started"))


@pytest.fixture
def nats(tmp_path):
    n = cloud_peers.NatsServer(tmp_path).start()
    with n.client() as c:
        c.stream_create(STREAM, ["tidegate.>"], duplicate_window_s=120)
    yield n
    n.stop()


def test_20k_records_in_the_stream_exactly_once(broker, nats, daemons, tmp_path):
    d = daemons(broker, extra="[ingest]\ndefault_sinks = js\n", sinks=nats_sink(nats))
    secs, m = cloud_peers.load_20k(broker, d, tmp_path, "js", "JetStream acks")
    d.stop()
    msgs, ids = stream_records(nats)
    assert len(msgs) == 20000 and len(ids) == 20000, (len(msgs), len(ids))
    assert m['tidegate_sink_records_total{sink="js",outcome="ok"}'] == 20000
    assert m['tidegate_sink_records_total{sink="js",outcome="retry"}'] == 0 and m["tidegate_outbox_rows"] == 0
    things = Counter()
    for msg in msgs:
        p = json.loads(msg["data"])
        assert msg["subject"] == f"tidegate.telemetry.{p['thing']}"
        assert msg["headers"].get("Nats-Expected-Stream") == STREAM
        things[p["thing"]] += 1
    assert things == {f"dev-{i:04d}": 4000 for i in range(1, 6)}
    print(f"nats: 20000/20000 distinct Nats-Msg-Id in the stream, 0 duplicates, "
          f"{20000 / secs:.0f} rec/s end to end (device_sim -> tidegate -> JetStream)")


def test_kill9_resends_are_dropped_by_jetstream(broker, nats, daemons, tmp_path):
    d = daemons(broker, extra="[ingest]\ndefault_sinks = js\n", sinks=nats_sink(nats))
    sim, summary_path = harness.Sim.start(broker, tmp_path, "--things", 5, "--count", 2000, "--rate", 250,
                                          "--qos", 1, "--seed", 11)
    wait_until(lambda: sink_metric(d, "ok") > 2000, 30, what="publishing under way")
    d.kill9()
    at_kill = harness.outbox_msg_ids(d.dir / "data" / "outbox.db")
    with nats.client() as c:
        in_stream = {m["headers"]["Nats-Msg-Id"] for m in c.stream_messages(STREAM)}
    resent = at_kill & in_stream  # delivered, but their deletion had not committed: sent again
    d.start()
    assert sim.wait(120) == 0, sim.text()
    total = json.loads(summary_path.read_text())["sent"]
    assert total == 10000

    def all_in():  # by (thing, seq): re-ingested copies (below) must not stand in for missing ones
        with nats.client() as c:
            if c.stream_count(STREAM) < total:
                return False
            return len({(json.loads(m["data"])["thing"], json.loads(m["data"])["seq"])
                        for m in c.stream_messages(STREAM)}) >= total
    wait_until(all_in, 90, interval=1.0, what="every message in the stream")
    wait_until(lambda: d.metric("tidegate_outbox_rows", 1) == 0, 30, what="outbox drained")
    log = daemon_log(d)
    d.stop()
    msgs, ids = stream_records(nats)
    distinct = {(json.loads(m["data"])["thing"], json.loads(m["data"])["seq"]) for m in msgs}
    assert len(distinct) == total, f"lost {total - len(distinct)}"
    missing = at_kill - set(ids)
    assert not missing, f"{len(missing)} records queued at the kill are missing from the stream: {sorted(missing)[:5]}"
    assert max(ids.values()) == 1, f"msg_ids stored twice: {[k for k, v in ids.items() if v > 1][:5]}"
    dropped = jetstream_duplicates(log)
    assert dropped >= len(resent), (f"{len(resent)} re-sent but JetStream reported {dropped} duplicates",
                                    log[-3000:])
    # Messages the daemon had committed but not yet acknowledged to the local broker come
    # back from it after the restart and are accepted again, as new records with new
    # msg_ids (README, known limitations: in-memory dedupe state). That is ingest, not this
    # sink, and Nats-Msg-Id cannot tell them apart; they are counted here, not asserted.
    reingested = len(msgs) - len(distinct)
    print(f"nats kill -9: {len(msgs)} messages in the stream for {total} sent, no msg_id twice; "
          f"{len(at_kill)} queued at the kill, {len(resent)} of them already in the stream and sent again, "
          f"{dropped} re-sends dropped by JetStream (Nats-Msg-Id); {reingested} messages accepted twice by "
          f"ingest after the kill (new msg_id)")


def run_sink_send(args, check_rc=None):
    exe = harness.BUILD / "tools" / "sink_send"
    if not exe.exists():
        pytest.fail(f"{exe} missing: make {exe.relative_to(harness.REPO)}")
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:exitcode=86", UBSAN_OPTIONS="halt_on_error=1:exitcode=87")
    p = subprocess.run([exe, "nats", *[str(a) for a in args]], capture_output=True, text=True, env=env, timeout=120)
    assert "Sanitizer" not in p.stderr and "runtime error" not in p.stderr, p.stderr
    if check_rc is not None:
        assert p.returncode == check_rc, p.stdout[-2000:] + p.stderr
    status = {}
    for line in p.stdout.splitlines():
        f = line.split()
        if f[0] != "summary":
            status[int(f[0])] = f[4]
    return status, p.stderr


def test_sink_resend_is_deduplicated_and_refusals_classified(nats):
    """The sink alone (tests/tools/sink_send): the same msg_ids sent twice are stored once;
    a message over the stream's max_msg_size is refused by JetStream for that record only
    (dead letter), a subject no stream captures leaves everything RETRY with the reason."""
    with nats.client() as c:
        c.stream_create("SMALL", ["small.>"], max_msg_size=2000)
    st, _ = run_sink_send(["--count", 1000, "url=" + nats.url, "stream=" + STREAM], check_rc=0)
    assert set(st.values()) == {"OK"}
    st, _ = run_sink_send(["--count", 1000, "--start-id", 501, "url=" + nats.url, "stream=" + STREAM], check_rc=0)
    assert set(st.values()) == {"OK"}  # a duplicate acknowledgement counts as delivered
    with nats.client() as c:
        assert c.stream_count(STREAM) == 1500
        ids = Counter(m["headers"]["Nats-Msg-Id"] for m in c.stream_messages(STREAM))
    assert len(ids) == 1500 and max(ids.values()) == 1
    st, err = run_sink_send(["--count", 20, "--big", "7:5000", "url=" + nats.url, "stream=SMALL",
                             "subject=small.<thing>"], check_rc=0)
    assert st[7] == "POISON" and sum(v == "OK" for v in st.values()) == 19
    assert "err_code 10054" in err, err
    st, err = run_sink_send(["--count", 5, "url=" + nats.url, "subject=nowhere.<thing>", "ack_timeout=2s"], check_rc=1)
    assert set(st.values()) == {"RETRY"}
    assert "no JetStream stream captures subject nowhere.dev-0000" in err, err


@pytest.mark.slow
def test_nats_outage_30s_under_load(broker, nats, daemons, tmp_path):
    d = daemons(broker, extra="[ingest]\ndefault_sinks = js\n", sinks=nats_sink(nats))
    total, queued = cloud_peers.outage_under_load(broker, d, tmp_path, "js", nats, "JetStream")
    wait_until(lambda: d.metric("tidegate_outbox_rows") == 0, 120, what="outbox drained")
    log = daemon_log(d)
    d.stop()
    msgs, ids = stream_records(nats)
    distinct = {(json.loads(m["data"])["thing"], json.loads(m["data"])["seq"]) for m in msgs}
    assert len(distinct) == total, f"lost {total - len(distinct)}"
    assert len(msgs) == len(ids) == total, "the stream holds a duplicate"
    print(f"nats 30 s outage: {len(msgs)} messages in the stream for {total} sent, 0 duplicates, "
          f"{queued:.0f} queued at the worst, {jetstream_duplicates(log)} re-sends dropped by JetStream")
