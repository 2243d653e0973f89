"""Issue 20: an uplink that accepts connections and never answers (a black hole), then comes
back. Kinesis is a real kinesalite behind the chaos run's TCP proxy; what arrived is read back
with boto3.

The black hole silences the connections already open too (as a middlebox that dropped its
state would), and they stay silent after it ends. Two sinks meet it two ways, both with a
20 s backoff base so that no schedule can bring them back in time:
- `hang` (timeout 30 s): its request hangs on a dead connection when the black hole ends;
  the request's own probes (sinks/aws.c) saw the endpoint silent and now see it answer, so it
  is sent again on a new connection instead of waiting out its timeout;
- `wait` (timeout 1 s): its requests time out and it backs off; the forwarder's probe
  (sinks/probe.c) sees the endpoint silent, then answering, and ends the backoff.
Both must deliver again within 2 s of the endpoint's return, and nothing may be lost.
"""
import json
import sys
import time
from collections import Counter

import aws_peers
import harness
from harness import wait_until

sys.path.insert(0, str(harness.REPO / "tests" / "chaos"))
import chaos  # noqa: E402


def sink_ok(d, name):
    return d.metric(f'tidegate_sink_records_total{{sink="{name}",outcome="ok"}}', 0)


def kin_sink(name, port, timeout):
    return f"""
[sink {name}]
type = kinesis
stream = {name}
endpoint = http://127.0.0.1:{port}
access_key_id = {aws_peers.KINESIS_KEY}
secret_access_key = {aws_peers.KINESIS_SECRET}
timeout = {timeout}
retry_base = 20s
retry_cap = 30s
"""


def test_blackhole_end_resumes_every_sink_within_2s(broker, daemons, tmp_path):
    with aws_peers.peers(streams=[("hang", 1), ("wait", 1)]) as (kin, _s3):
        proxy = chaos.ChaosProxy(int(kin.endpoint.rsplit(":", 1)[1]))
        try:
            d = daemons(broker, extra="[ingest]\ndefault_sinks = hang, wait\n",
                        sinks=kin_sink("hang", proxy.port, "30s") + kin_sink("wait", proxy.port, "1s"))
            sim, summary_path = harness.Sim.start(broker, tmp_path, "--things", 2, "--rate", 20, "--duration", 16,
                                                  "--qos", 1, "--seed", 11)
            wait_until(lambda: sink_ok(d, "hang") > 20 and sink_ok(d, "wait") > 20, 30, what="both sinks delivering")
            proxy.set("blackhole")
            t0 = time.monotonic()
            wait_until(lambda: time.monotonic() - t0 >= 2, 5, interval=0.1, what="the black hole settles")
            stuck = {n: sink_ok(d, n) for n in ("hang", "wait")}
            wait_until(lambda: time.monotonic() - t0 >= 5, 8, interval=0.1, what="5 s of black hole")
            # the fault took hold: nothing went through in its last 3 s
            assert {n: sink_ok(d, n) for n in ("hang", "wait")} == stuck, "the black hole let records through"
            proxy.set("pass")
            t_end = time.monotonic()
            back = {}

            def resumed():
                for n in ("hang", "wait"):
                    if n not in back and sink_ok(d, n) > stuck[n]:
                        back[n] = time.monotonic() - t_end
                return len(back) == 2

            wait_until(resumed, 30, interval=0.05, what="both sinks delivering again")
            print(f"resumed after the black hole: {back}")
            assert sim.wait(60) == 0
            total = json.loads(summary_path.read_text())["sent"]
            wait_until(lambda: d.metric("tidegate_outbox_rows") == 0, 60, what="outbox drained")
            d.stop()
            log = d.log()
            recs = {n: [json.loads(r["data"]) for r in aws_peers.read_kinesis(kin.endpoint, n)] for n in ("hang", "wait")}
        finally:
            proxy.close()
    for n, rs in recs.items():
        keys = Counter((r["thing"], r["seq"]) for r in rs)
        assert len(keys) == total, (n, len(keys), total)
    # hang's only way back in time; wait comes back by its probe or, when its request was
    # under way at the end, by the same resend (the unit test test_forwarder.c covers both)
    assert "sending it again" in log, "the hung request was not sent again on a new connection"
    assert back["hang"] <= 2.0 and back["wait"] <= 2.0, back


def test_broker_black_hole_connack_timeout(broker, daemons, tmp_path):
    """The daemon's first attempt meets a broker port that accepts and never answers (the
    chaos proxy's black hole; the connection stays silent after it ends, like the dying
    listen socket of a broker killed with -9). The attempt must be given up after the
    CONNACK timeout (5 s, gateway/mqtt/broker.c) and made again, not held until the
    keepalive: connected within 12 s of the start, and messages flow."""
    proxy = chaos.ChaosProxy(broker.port)
    try:
        proxy.set("blackhole")
        d = daemons(broker, start=False)
        conf = d.conf.read_text()
        assert f"port = {broker.port}\n" in conf
        d.conf.write_text(conf.replace(f"port = {broker.port}\n", f"port = {proxy.port}\n", 1))
        t0 = time.monotonic()
        d.start(wait_connected=False)
        wait_until(lambda: time.monotonic() - t0 >= 2, 5, interval=0.1, what="2 s into the attempt")
        assert d.metric("tidegate_broker_connected") == 0, "connected through a black hole?"
        proxy.set("pass")
        wait_until(lambda: d.metric("tidegate_broker_connected") == 1, 30, interval=0.1, what="connected")
        took = time.monotonic() - t0
        print(f"connected {took:.2f} s after the start")
        assert "no CONNACK, connecting again" in d.log()
        assert took < 12, took
        time.sleep(0.3)  # SUBSCRIBE follows CONNACK
        summary = harness.Sim.run(broker, tmp_path, "--things", 1, "--count", 50, "--max-rate", "--qos", 1,
                                  "--seed", 4)
        assert summary["acked"] >= 50, summary
        wait_until(lambda: sink_ok(d, "lake") >= 50, 30, what="50 records in the lake")
    finally:
        proxy.close()


def test_stop_during_black_hole_takes_the_drain_budget_not_the_timeout(broker, daemons, tmp_path):
    """A daemon stopped while its S3 sink's request hangs on a black hole (timeout 60 s, the
    default) stops within its drain budget (10 s, gateway/daemon.c): the forwarder abandons
    the request (sink_env.abandon). What was not delivered stays in the outbox."""
    with aws_peers.peers() as (_kin, s3):
        proxy = chaos.ChaosProxy(int(s3.endpoint.rsplit(":", 1)[1]))
        try:
            d = daemons(broker, extra="[ingest]\ndefault_sinks = s3\n", sinks=f"""
[sink s3]
type = s3
bucket = tidegate
endpoint = http://127.0.0.1:{proxy.port}
path_style = true
access_key_id = {aws_peers.S3RVER_KEY}
secret_access_key = {aws_peers.S3RVER_SECRET}
flush_age = 1s
timeout = 60s
""")
            proxy.set("blackhole")
            harness.Sim.run(broker, tmp_path, "--things", 1, "--count", 30, "--max-rate", "--qos", 1, "--seed", 6)
            # the object is due after flush_age; give the PUT time to go out and hang
            wait_until(lambda: d.metric("tidegate_outbox_rows", 0) >= 30, 10, what="30 rows in the outbox")
            time.sleep(2.5)
            assert sink_ok(d, "s3") == 0
            t0 = time.monotonic()
            rc = d.stop()
            took = time.monotonic() - t0
            print(f"stop took {took:.1f} s (exit {rc})")
            assert rc == 0
            assert took < 15, took
            assert "abandoned" in d.log()
        finally:
            proxy.close()
