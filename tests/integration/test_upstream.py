"""Issue 6 — store-and-forward through the daemon to the stream and storage tiers.

Real kinesalite and s3rver on 127.0.0.1; what arrived is read back with boto3, never with
tidegate's own code.
"""
import json
import re
import time
from collections import Counter

import pytest

import aws_peers
import harness
from harness import read_lake, wait_until

KEY_RE = re.compile(r"^edge/(?P<table>[a-z_]+)/year=(\d{4})/month=(\d{2})/day=(\d{2})/hour=(\d{2})/"
                    r"gw-test-(?P<first>\d+)-(?P<last>\d+)\.json\.gz$")


def upstream_sinks(kin_endpoint=None, s3_endpoint=None, stream="tg", bucket="tidegate", names=("lake",),
                   retry_cap="2s"):
    text = ""
    if kin_endpoint:
        text += f"""
[sink kin]
type = kinesis
stream = {stream}
endpoint = {kin_endpoint}
access_key_id = {aws_peers.KINESIS_KEY}
secret_access_key = {aws_peers.KINESIS_SECRET}
retry_base = 100ms
retry_cap = {retry_cap}
"""
    if s3_endpoint:
        text += f"""
[sink s3]
type = s3
bucket = {bucket}
prefix = edge
endpoint = {s3_endpoint}
path_style = true
access_key_id = {aws_peers.S3RVER_KEY}
secret_access_key = {aws_peers.S3RVER_SECRET}
flush_age = 1s
flush_bytes = 256k
retry_base = 100ms
retry_cap = {retry_cap}
"""
    return text


def sink_ok(d, name):
    return d.metric(f'tidegate_sink_records_total{{sink="{name}",outcome="ok"}}', 0)


def kinesis_msgs(kin, stream="tg"):
    out = []
    for r in aws_peers.read_kinesis(kin.endpoint, stream):
        assert r["data"].endswith(b"\n")
        out.append((r["pkey"], json.loads(r["data"])))
    return out


def s3_msgs(s3, bucket="tidegate"):
    objs = aws_peers.read_s3(s3.endpoint, bucket, prefix="edge/")
    lines = []
    for o in objs:
        m = KEY_RE.match(o["key"])
        assert m, o["key"]
        ids = [int(x["msg_id"].rsplit("-", 1)[1]) for x in o["lines"]]
        assert min(ids) == int(m["first"]) and max(ids) == int(m["last"]), o["key"]
        lines += o["lines"]
    return objs, lines


def test_20k_messages_reach_kinesis_and_s3_exactly_once(broker, daemons, tmp_path):
    with aws_peers.peers(streams=[("tg", 4)]) as (kin, s3):
        d = daemons(broker, top="", extra="[ingest]\ndefault_sinks = lake, kin, s3\n",
                    sinks=harness.DEFAULT_SINKS + upstream_sinks(kin.endpoint, s3.endpoint))
        summary = harness.Sim.run(broker, tmp_path, "--things", 5, "--count", 4000, "--max-rate", "--qos", 1,
                                  "--seed", 3)
        assert summary["acked"] >= 20000 and summary["failed"] == 0, summary  # >=: resends after a reconnect
        wait_until(lambda: all(sink_ok(d, n) >= 20000 for n in ("lake", "kin", "s3")), 120,
                   what="20000 records in every sink")
        d.stop()
        kin_recs = kinesis_msgs(kin)
        objs, s3_recs = s3_msgs(s3)
    lake = read_lake(d.lake)
    for name, recs in (("kinesis", [r for _, r in kin_recs]), ("s3", s3_recs), ("lake", lake)):
        ids = Counter(r["msg_id"] for r in recs)
        assert len(ids) == 20000, (name, len(ids))
        assert max(ids.values()) == 1, (name, "duplicates")
    assert {r["msg_id"] for r in s3_recs} == {r["msg_id"] for r in lake} == {r["msg_id"] for _, r in kin_recs}
    assert all(pkey == r["thing"] for pkey, r in kin_recs)
    assert Counter(r["thing"] for _, r in kin_recs) == {f"dev-{i:04d}": 4000 for i in range(1, 6)}
    print(f"s3: {len(objs)} objects; kinesis: {len(kin_recs)} records")


@pytest.mark.slow
def test_uplink_outage_30s_loses_nothing(broker, daemons, tmp_path):
    with aws_peers.peers(streams=[("tg", 2)]) as (kin, s3):
        d = daemons(broker, extra="[ingest]\ndefault_sinks = kin, s3\n",
                    sinks=upstream_sinks(kin.endpoint, s3.endpoint, retry_cap="3s"))
        sim, summary_path = harness.Sim.start(broker, tmp_path, "--things", 5, "--rate", 40, "--duration", 45,
                                              "--qos", 1, "--seed", 5)
        wait_until(lambda: sink_ok(d, "kin") > 500, 30, what="flowing upstream")
        kin.stop()
        s3.stop()
        t0 = time.monotonic()
        wait_until(lambda: time.monotonic() - t0 >= 30, 40, interval=1, what="30 s outage")
        queued = d.metric("tidegate_outbox_rows")
        assert queued > 1000, "records should pile up in the outbox while the uplink is down"
        kin.start()
        s3.start()
        assert sim.wait(120) == 0
        total = json.loads(summary_path.read_text())["sent"]
        wait_until(lambda: d.metric("tidegate_outbox_rows") == 0, 120, what="outbox drained")
        d.stop()
        kin_recs = [r for _, r in kinesis_msgs(kin)]
        _, s3_recs = s3_msgs(s3)
    for name, recs in (("kinesis", kin_recs), ("s3", s3_recs)):
        keys = Counter((r["thing"], r["seq"]) for r in recs)
        dups = sum(v - 1 for v in keys.values())
        print(f"{name}: {len(keys)}/{total} distinct after a 30 s outage with {queued:.0f} queued; duplicates {dups}")
        assert len(keys) == total


def test_buffer_cap_drop_oldest_counts_exactly_and_keeps_alerts(broker, daemons, tmp_path):
    rd = tmp_path / "rules"
    rd.mkdir()
    (rd / "hot.json").write_text(json.dumps({
        "sql": "SELECT temperature, ts FROM 'devices/+/telemetry' WHERE temperature > 40",
        "actions": [{"alert": {"name": "hot", "clear": "temperature < 35"}}]}))
    kin = aws_peers.Kinesalite()  # not started yet: the uplink is down
    try:
        d = daemons(broker, extra=f"[ingest]\ndefault_sinks = kin\nrules_dir = {rd}\n[outbox]\nmax_rows = 1000\n",
                    sinks=upstream_sinks(kin.endpoint, retry_cap="500ms"))
        # two spikes early in the stream: their alerts are among the oldest rows
        summary = harness.Sim.run(broker, tmp_path, "--things", 5, "--count", 1000, "--max-rate", "--qos", 1,
                                  "--seed", 9, "--start-ts", int(time.time() * 1000) - 3600000,
                                  "--interval-ms", 1000, "--spike", "dev-0002:10:20:45", "--spike", "dev-0004:30:5:44")
        assert summary["acked"] >= 5000 and summary["failed"] == 0, summary  # >=: resends after a reconnect
        wait_until(lambda: d.metric("tidegate_messages_accepted_total") == 5000, 30)
        m = d.metrics()
        alerts = m["tidegate_alerts_raised_total"] + m["tidegate_alerts_cleared_total"]
        assert alerts == 4
        dropped = m["tidegate_outbox_dropped_total"]
        assert 3900 <= dropped <= 4100
        assert m["tidegate_outbox_dropped_alerts_total"] == 0
        assert m["tidegate_outbox_rows"] == 5000 + alerts - dropped <= 1000
        kin.start()
        kin.create_stream("tg", 1)
        wait_until(lambda: d.metric("tidegate_outbox_rows") == 0, 60, what="drained after the uplink returned")
        d.stop()
        recs = [r for _, r in kinesis_msgs(kin)]
    finally:
        kin.close()
    got_alerts = [r for r in recs if "alert" in r]
    telemetry = [r for r in recs if "alert" not in r]
    assert len(recs) == 5000 + alerts - dropped, (len(recs), dropped)
    assert len({r["msg_id"] for r in recs}) == len(recs)
    assert sorted((a["thing"], a["state"]) for a in got_alerts) == [
        ("dev-0002", "cleared"), ("dev-0002", "raised"), ("dev-0004", "cleared"), ("dev-0004", "raised")]
    # drop_oldest: what survived of the bulk stream is, for every thing that kept any, the
    # newest of its readings (a suffix of its sequence; a thing whose connection finished
    # early may have lost all of its readings to newer ones of the others)
    kept = {}
    for r in telemetry:
        kept.setdefault(r["thing"], []).append(r["seq"])
    assert kept
    for thing, seqs in kept.items():
        seqs.sort()
        assert seqs == list(range(seqs[0], 1000)), (thing, seqs[:3], seqs[-3:], len(seqs))
    print(f"cap 1000 rows: dropped {dropped:.0f} (metric), delivered {len(recs)} (read back), alerts kept {len(got_alerts)}")


def test_poison_record_dead_lettered_without_blocking(broker, daemons, certs):
    delivered = []

    def respond(method, path, headers, body):
        req = json.loads(body)
        datas = [json.loads(__import__("base64").b64decode(r["Data"])) for r in req["Records"]]
        if any(x.get("poison") for x in datas):
            return 400, {"Content-Type": "application/x-amz-json-1.1"}, json.dumps(
                {"__type": "ValidationException", "message": "record rejected"}).encode()
        delivered.extend(datas)
        res = [{"SequenceNumber": str(i), "ShardId": "shardId-000000000000"} for i in range(len(datas))]
        return 200, {"Content-Type": "application/x-amz-json-1.1"}, json.dumps(
            {"FailedRecordCount": 0, "Records": res}).encode()

    with aws_peers.ScriptedPeer(respond, aws_peers.KINESIS_SECRET) as peer:
        d = daemons(broker, extra="[ingest]\ndefault_sinks = kin\n", sinks=upstream_sinks(peer.endpoint))
        cert, key = certs.thing("dev-0005")
        msgs = [json.dumps({"sensor_id": "dev-0005", "ts": i, "seq": i, "temperature": 20.0, "poison": i == 13})
                for i in range(40)]
        r = harness.mosquitto_pub(broker, cert, key, "devices/dev-0005/telemetry", msgs)
        assert r.returncode == 0, r.stderr
        wait_until(lambda: d.metric("tidegate_outbox_rows") == 0 and d.metric("tidegate_messages_accepted_total") == 40,
                   30, what="all settled")
        m = d.metrics()
        d.stop()
    assert sorted(x["seq"] for x in delivered) == [i for i in range(40) if i != 13]
    assert m["tidegate_outbox_dead_total"] == 1
    assert m['tidegate_sink_records_total{sink="kin",outcome="dead"}'] == 1
    import sqlite3
    con = sqlite3.connect(d.dir / "data" / "outbox.db")
    rows = con.execute("SELECT sink, payload, error FROM dead").fetchall()
    con.close()
    assert len(rows) == 1 and rows[0][0] == "kin" and json.loads(rows[0][1])["seq"] == 13
    assert "ValidationException" in rows[0][2]
