"""Issue 12 item 4 — /healthz judges each sink: a fresh, idle daemon is healthy; a sink whose
sends have failed for longer than health_failing_after, or whose oldest undelivered record
is older than health_max_age, makes it "degraded" (503) and says why. /metrics gives each
sink's backlog (rows, bytes) and the age of its oldest undelivered record, from counters —
checked here against the outbox table itself."""
import json
import sqlite3

import harness
from harness import free_port, wait_until

# Two Kinesis sinks whose endpoints refuse connections: one judged on failure time, the
# other on the age of what it has not delivered.
SINKS = harness.DEFAULT_SINKS + """
[sink stream]
type = kinesis
stream = telemetry
endpoint = http://127.0.0.1:{dead1}
access_key_id = AKIDEXAMPLE
secret_access_key = not-a-secret
retry_base = 100ms
retry_cap = 300ms
health_failing_after = 1s
health_max_age = 0

[sink archive]
type = kinesis
stream = telemetry
endpoint = http://127.0.0.1:{dead2}
access_key_id = AKIDEXAMPLE
secret_access_key = not-a-secret
retry_base = 100ms
retry_cap = 300ms
health_failing_after = 0
health_max_age = 1s
"""


def health(d, path="/healthz"):
    status, body = d.http(path)
    return status, (json.loads(body) if body else None)


def table_backlog(db, sink):
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute("SELECT count(*), coalesce(sum(length(payload)), 0) FROM outbox WHERE sink = "
                           "(SELECT id FROM sinks WHERE name = ?)", (sink,)).fetchone()
    finally:
        con.close()


def test_healthz_per_sink_and_backlog_metrics(broker, daemons, certs):
    sinks = SINKS.replace("{dead1}", str(free_port())).replace("{dead2}", str(free_port()))
    d = daemons(broker, extra="[ingest]\ndefault_sinks = lake, stream, archive\n", sinks=sinks)
    # fresh and idle: nothing sent yet is not down
    status, h = health(d)
    assert status == 200 and h["status"] == "ok" and h["problems"] == [], h
    assert [(s["name"], s["state"], s["healthy"], s["up"]) for s in h["sinks"]] == \
        [("lake", "idle", True, True), ("stream", "idle", True, True), ("archive", "idle", True, True)]
    m = d.metrics()
    assert m['tidegate_sink_up{sink="stream",type="kinesis"}'] == 1
    assert m['tidegate_sink_backlog_rows{sink="stream"}'] == 0

    cert, key = certs.thing("dev-0001")
    msgs = [json.dumps({"sensor_id": "dev-0001", "seq": i, "temperature": 20 + i}) for i in range(3)]
    assert harness.mosquitto_pub(broker, cert, key, "devices/dev-0001/telemetry", msgs).returncode == 0
    wait_until(lambda: health(d)[0] == 503, 15, what="/healthz degraded")
    status, h = health(d)
    assert h["status"] == "degraded"
    by = {s["name"]: s for s in h["sinks"]}
    assert by["lake"]["state"] == "ok" and by["lake"]["healthy"] and by["lake"]["backlog_rows"] == 0
    wait_until(lambda: len(health(d)[1]["problems"]) == 2, 10, what="both sinks degraded")
    status, h = health(d)
    by = {s["name"]: s for s in h["sinks"]}
    problems = " | ".join(h["problems"])
    assert "sink stream: sends failing for" in problems, problems
    assert "sink archive: oldest undelivered record waiting" in problems, problems
    assert by["stream"]["state"] == "failing" and not by["stream"]["healthy"] and not by["stream"]["up"]
    assert by["stream"]["failing_s"] > 1.0
    assert by["archive"]["oldest_undelivered_s"] > 1.0
    assert by["stream"]["backlog_rows"] == 3 and by["archive"]["backlog_rows"] == 3
    # /api/status: the same report, as a status rather than a probe
    status, st = health(d, "/api/status")
    assert status == 200 and st["status"] == "degraded"

    m = d.metrics()
    db = d.dir / "data" / "outbox.db"
    for sink in ("lake", "stream", "archive"):
        rows, nbytes = table_backlog(db, sink)
        assert m[f'tidegate_sink_backlog_rows{{sink="{sink}"}}'] == rows, sink
        assert m[f'tidegate_sink_backlog_bytes{{sink="{sink}"}}'] == nbytes, sink
    assert table_backlog(db, "stream")[0] == 3
    assert m['tidegate_sink_oldest_undelivered_seconds{sink="stream"}'] >= 1.0
    assert m['tidegate_sink_oldest_undelivered_seconds{sink="lake"}'] == 0
    assert m['tidegate_sink_failing_seconds{sink="stream"}'] >= 1.0
    assert m['tidegate_sink_healthy{sink="stream"}'] == 0
    assert m['tidegate_sink_healthy{sink="archive"}'] == 0
    assert m['tidegate_sink_healthy{sink="lake"}'] == 1
