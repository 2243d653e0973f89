"""Issue 15 — the operator's console API on the running daemon: auth, every endpoint, the
rule write path (checked like `tidegate rules check`, atomic, backed up, hot-reloaded,
refused without touching the running set), the event stream, TLS and the retention store.
Outcomes are checked at the far end: republishes seen by a real MQTT subscriber, records
read back from the lake, files read back from rules_dir."""
import http.client
import json
import os
import socket
import sqlite3
import stat
import subprocess
import threading
import time

import harness
from console_stack import Console
from harness import read_lake, wait_until
from test_rules_live import Collector


def send(broker, certs, thing, payloads, topic=None):
    cert, key = certs.thing(thing)
    r = harness.mosquitto_pub(broker, cert, key, topic or f"devices/{thing}/telemetry",
                              [p if isinstance(p, str) else json.dumps(p) for p in payloads])
    assert r.returncode == 0, r.stderr


def test_auth_health_and_page(broker, daemons, tmp_path):
    c = Console(broker, daemons, tmp_path)
    # open paths
    st, body, _ = c.get("/healthz", token=None)
    assert st == 200 and body["status"] == "ok"
    st, body, _ = c.get("/readyz", token=None)
    assert st == 200 and body == {"ready": True, "outbox_open": True, "rules_loaded": True, "broker_connected": True}
    st, page, hdrs = c.get("/", token=None)
    assert st == 200 and "<title>tidegate console</title>" in page and hdrs["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in hdrs["Content-Security-Policy"]
    st, js, hdrs = c.get("/app.js", token=None)
    assert st == 200 and "api/events" in js and hdrs["Content-Type"].startswith("text/javascript")
    # no file outside www_dir, however the name is spelled
    for p in ("/..%2f..%2fetc%2fpasswd", "/../Makefile", "/.hidden.js", "/nothere.js", "/app.js.bak"):
        st, body, _ = c.get(p, token=None)
        assert st == 404 and body["error"] in ("not_found",), (p, body)
    # everything else needs the token: missing, wrong, wrong scheme
    refused = 0
    for path in ("/api/rules", "/api/devices", "/api/events", "/metrics", "/api/status"):
        for tok in (None, "not-the-token", c.token + "x"):
            st, body, hdrs = c.get(path, token=tok)
            assert st == 401, (path, tok, st)
            assert body["error"] == "unauthorized" and body["detail"], body
            assert hdrs["WWW-Authenticate"].startswith("Bearer")
            refused += 1
    st, body, _ = c.call("GET", "/api/rules", headers={"Authorization": f"Basic {c.token}"}, token=None)
    assert st == 401
    refused += 1
    m = c.d.metrics()
    assert m["tidegate_api_unauthorized_total"] == refused
    assert m["tidegate_api_responses_total{class=\"4xx\"}"] >= refused
    st, body, _ = c.get("/api/status")
    assert st == 200 and body["broker_connected"] is True


def test_readyz_follows_the_broker(broker, daemons, tmp_path):
    c = Console(broker, daemons, tmp_path)
    assert c.get("/readyz", token=None)[0] == 200
    broker.stop()
    wait_until(lambda: c.get("/readyz", token=None)[0] == 503, 20, what="readyz 503")
    st, body, _ = c.get("/readyz", token=None)
    assert body["broker_connected"] is False and body["outbox_open"] is True and body["rules_loaded"] is True


def test_bad_requests_get_json_errors(broker, daemons, tmp_path):
    c = Console(broker, daemons, tmp_path)
    big = b'{"sql": "' + b"x" * (300 * 1024) + b'"}'
    st, body, _ = c.call("PUT", "/api/rules/big", body=big)
    assert st == 413 and body["error"] == "body_too_large" and "262144" in body["detail"]
    assert not (c.rules_dir / "big.json").exists()
    st, body, _ = c.call("POST", "/api/rules/test", body=b'{"topic": "devices/x/telemetry", ')
    assert st == 400 and body["error"] == "bad_json" and "1:" in body["detail"]
    st, body, _ = c.call("PUT", "/api/rules/x", body=b'{"sql": ')
    assert st == 400 and body["error"] == "bad_json" and body["errors"][0]["line"] == 1
    st, body, _ = c.call("POST", "/api/query", body=b"[1, 2]")
    assert st == 400 and body["error"] == "bad_json"
    st, body, _ = c.get("/api/nothing")
    assert st == 404 and body["error"] == "not_found"
    st, body, _ = c.call("DELETE", "/api/devices")
    assert st == 405 and body["error"] == "method_not_allowed"
    st, body, _ = c.get("/api/rules/no-such-rule")
    assert st == 404 and body["error"] == "unknown_rule"
    st, body, _ = c.call("DELETE", "/api/rules/no-such-rule")
    assert st == 404 and body["error"] == "unknown_rule"
    st, body, _ = c.call("POST", "/api/sinks/nope/retry-dead")
    assert st == 404 and body["error"] == "unknown_sink"
    st, body, _ = c.get("/api/things/nobody/latest")
    assert st == 404 and body["error"] == "unknown_thing"
    st, body, _ = c.get("/api/series?thing=dev-0001")
    assert st == 400 and "field" in body["detail"]
    st, body, _ = c.get("/api/series?thing=dev-0001&field=temperature;drop&since=-1h")
    assert st == 400
    st, body, _ = c.get("/api/quarantine?limit=100000")
    assert st == 400


def test_broken_put_keeps_the_running_rule(broker, daemons, tmp_path, certs):
    sub = Collector(broker, "alerts/#")
    try:
        c = Console(broker, daemons, tmp_path, rules=("hot-alerts.json",))
        before = (c.rules_dir / "hot-alerts.json").read_bytes()
        send(broker, certs, "dev-0001", [{"sensor_id": "dev-0001", "ts": 1, "temperature": 30.0}])
        wait_until(lambda: len(sub.snapshot()) == 1, 10)
        broken = ('{\n  "sql": "SELECT * FROM \'devices/+/telemetry\' WHERE temperature >",\n'
                  '  "actions": [{"republish": {"topic": "alerts/${topic(2)}"}}]\n}\n')
        st, body, _ = c.call("PUT", "/api/rules/hot-alerts", body=broken)
        assert st == 422 and body["error"] == "invalid_rule", body
        e = body["errors"][0]
        assert e["file"] == str(c.rules_dir / "hot-alerts.json") and e["line"] == 2 and e["col"] > 40, e
        assert body["detail"].startswith(f"{c.rules_dir / 'hot-alerts.json'}:2:")
        # an unknown sink is refused as the daemon would (its sink names), with a position
        st, body, _ = c.call("PUT", "/api/rules/hot-alerts",
                             body='{"sql": "SELECT * FROM \'devices/+/telemetry\'", "actions": [{"sink": {"name": "nope"}}]}')
        assert st == 422 and "nope" in body["detail"], body
        assert (c.rules_dir / "hot-alerts.json").read_bytes() == before
        assert not (c.rules_dir / ".backup").exists()
        assert sorted(p.name for p in c.rules_dir.iterdir()) == ["hot-alerts.json"]
        # still routing with the old rule
        send(broker, certs, "dev-0001", [{"sensor_id": "dev-0001", "ts": 2, "temperature": 31.0},
                                          {"sensor_id": "dev-0001", "ts": 3, "temperature": 20.0}])
        wait_until(lambda: len(sub.snapshot()) == 2, 10)
        time.sleep(0.3)
        assert [p["ts"] for _, p in sub.snapshot()] == [1, 2]
        m = c.d.metrics()
        assert m["tidegate_api_rule_change_failures_total"] == 2
        assert m["tidegate_rules_reloads_total"] == 0 and m["tidegate_rules_reload_failures_total"] == 0
        st, body, _ = c.get("/api/rules")
        r = body["rules"][0]
        assert r["name"] == "hot-alerts" and r["matches"] == 2 and r["evaluated"] == 3 and r["last_error"] is None
    finally:
        sub.close()


def test_put_reloads_backs_up_and_delete(broker, daemons, tmp_path, certs):
    sub = Collector(broker, "alerts/console/#")
    try:
        c = Console(broker, daemons, tmp_path, rules=("hot-alerts.json",))
        rule = {"description": "tap", "sql": "SELECT temperature, topic(2) AS thing FROM 'devices/+/telemetry' WHERE temperature > 25",
                "actions": [{"republish": {"topic": "alerts/console/${topic(2)}", "qos": 1}}]}
        # dry run: checked, not written
        st, body, _ = c.call("PUT", "/api/rules/tap?dry_run=1", body=json.dumps(rule))
        assert st == 200 and body == {"name": "tap", "valid": True, "written": False}
        assert not (c.rules_dir / "tap.json").exists()
        st, body, _ = c.call("PUT", "/api/rules/tap", body=json.dumps(rule, indent=1))
        assert st == 201 and body["created"] is True and body["file"] == str(c.rules_dir / "tap.json"), body
        assert json.loads((c.rules_dir / "tap.json").read_text()) == rule
        # in force when the PUT returns
        send(broker, certs, "dev-0002", [{"sensor_id": "dev-0002", "ts": 1, "temperature": 26.0}])
        wait_until(lambda: len(sub.snapshot()) == 1, 10)
        assert sub.snapshot()[0] == ("alerts/console/dev-0002", {"temperature": 26.0, "thing": "dev-0002"})
        # a change: the previous version goes to .backup/
        v1 = (c.rules_dir / "tap.json").read_bytes()
        rule["sql"] = rule["sql"].replace("> 25", "> 27")
        st, body, _ = c.call("PUT", "/api/rules/tap", body=json.dumps(rule))
        assert st == 200 and body["created"] is False
        assert (c.rules_dir / ".backup" / "tap.json").read_bytes() == v1
        send(broker, certs, "dev-0002", [{"sensor_id": "dev-0002", "ts": 2, "temperature": 26.0},
                                          {"sensor_id": "dev-0002", "ts": 3, "temperature": 28.0}])
        wait_until(lambda: len(sub.snapshot()) == 2, 10)
        st, body, _ = c.get("/api/rules/tap")
        assert st == 200 and body["sql"] == rule["sql"] and json.loads(body["source"]) == rule
        assert body["matches"] == 1 and body["enabled"] is True  # counters start with the new set
        st, body, _ = c.get("/api/rules")
        assert [r["name"] for r in body["rules"]] == ["hot-alerts", "tap"]
        # delete
        st, body, _ = c.call("DELETE", "/api/rules/tap")
        assert st == 200 and body["deleted"] is True
        assert not (c.rules_dir / "tap.json").exists()
        assert json.loads((c.rules_dir / ".backup" / "tap.json").read_text()) == rule
        send(broker, certs, "dev-0002", [{"sensor_id": "dev-0002", "ts": 4, "temperature": 30.0}])
        wait_until(lambda: c.d.metric("tidegate_messages_accepted_total") == 4, 10)
        time.sleep(0.3)
        assert len(sub.snapshot()) == 2
        assert c.d.metric("tidegate_api_rule_changes_total") == 3
        assert c.get("/api/rules/tap")[0] == 404
    finally:
        sub.close()


def test_rule_names_cannot_leave_rules_dir(broker, daemons, tmp_path):
    c = Console(broker, daemons, tmp_path, rules=("hot-alerts.json",))
    good = '{"sql": "SELECT * FROM \'devices/+/telemetry\'", "actions": []}'
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    for name in ("..%2F..%2Fevil", "..%2Fevil", ".hidden", "a%2Fb", "..", "%2Fetc%2Fpasswd", "x" * 129, "a%00b", "sp%20ace"):
        st, body, _ = c.call("PUT", f"/api/rules/{name}", body=good)
        assert st in (400, 404), (name, st, body)
        assert body["error"] in ("bad_rule_name", "not_found"), body
    # raw request paths that a client library would normalise
    conn = http.client.HTTPConnection("127.0.0.1", c.d.http_port, timeout=5)
    for raw in ("/api/rules/../../evil", "/api/rules/../rules/evil"):
        conn.request("PUT", raw, body=good, headers={"Authorization": f"Bearer {c.token}"})
        resp = conn.getresponse()
        resp.read()
        assert resp.status in (400, 404), raw
    conn.close()
    after = sorted(str(p) for p in tmp_path.rglob("*") if "tidegate/data" not in str(p) and "tidegate/lake" not in str(p))
    assert [p for p in after if p not in before and "tidegate/" not in p] == []
    assert not list(tmp_path.rglob("evil*")) and sorted(p.name for p in c.rules_dir.iterdir()) == ["hot-alerts.json"]


def test_concurrent_puts(broker, daemons, tmp_path):
    c = Console(broker, daemons, tmp_path, rules=("hot-alerts.json",))
    results = []
    lock = threading.Lock()

    def put(name, threshold):
        body = json.dumps({"sql": f"SELECT * FROM 'devices/+/telemetry' WHERE temperature > {threshold}",
                           "actions": [{"republish": {"topic": f"c/{name}"}}]})
        st, resp, _ = c.call("PUT", f"/api/rules/{name}", body=body, timeout=60)
        with lock:
            results.append((name, threshold, st, resp))

    threads = [threading.Thread(target=put, args=(f"r{i}", i)) for i in range(8)]
    threads += [threading.Thread(target=put, args=("shared", 100 + i)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert len(results) == 12
    assert all(st in (200, 201) for _, _, st, _ in results), results
    assert sum(1 for n, _, st, _ in results if n == "shared" and st == 201) == 1
    names = sorted(p.name for p in c.rules_dir.glob("*.json"))
    assert names == sorted(["hot-alerts.json", "shared.json"] + [f"r{i}.json" for i in range(8)])
    shared = json.loads((c.rules_dir / "shared.json").read_text())  # whole, one of the four
    assert any(shared["sql"].endswith(f"> {100 + i}") for i in range(4))
    st, body, _ = c.get("/api/rules")
    assert sorted(r["name"] for r in body["rules"]) == sorted(n[:-5] for n in names)
    running = {r["name"]: r["sql"] for r in body["rules"]}
    assert running["shared"] == shared["sql"]  # the last write is the one running
    assert not [p for p in c.rules_dir.iterdir() if p.name.startswith(".") and p.name != ".backup"]
    assert not list((tmp_path / "tidegate" / "data").glob(".rules-check-*"))


def test_rule_test_endpoint(broker, daemons, tmp_path):
    sub = Collector(broker, "alerts/#")
    try:
        c = Console(broker, daemons, tmp_path)
        st, body, _ = c.call("POST", "/api/rules/test", body={"name": "hot-alerts", "topic": "devices/dev-0003/telemetry",
                                                               "payload": {"sensor_id": "s", "temperature": 29.5, "ts": 7}})
        assert st == 200 and body["matched"] is True, body
        assert body["actions"] == [{"kind": "republish", "error_action": False, "topic": "alerts/dev-0003", "qos": 1,
                                    "payload": {"sensor_id": "s", "temperature": 29.5, "ts": 7, "thing": "dev-0003"}}]
        st, body, _ = c.call("POST", "/api/rules/test", body={"name": "high-temperature-alert",
                                                               "topic": "devices/dev-0003/telemetry",
                                                               "payload": {"sensor_id": "s", "temperature": 20, "ts": 7}})
        assert st == 200 and body["matched"] is False and body["note"].startswith("no match: WHERE")
        assert body["actions"][0]["kind"] == "alert" and body["actions"][0]["condition"] == "clear"  # below 35
        st, body, _ = c.call("POST", "/api/rules/test", body={"source": '{"sql": "SELECT x FROM \'a/b\'", "actions": []}',
                                                               "topic": "c/d", "payload": {"x": 1}})
        assert st == 200 and body["evaluated"] is False and "FROM filter" in body["note"]
        st, body, _ = c.call("POST", "/api/rules/test", body={"name": "draft", "topic": "a/b",
                                                               "source": '{\n "sql": "SELECT FROM \'a/b\'",\n "actions": []\n}'})
        assert st == 422 and body["errors"][0]["line"] == 2 and body["errors"][0]["file"] == "draft.json", body
        st, body, _ = c.call("POST", "/api/rules/test", body={"name": "nope", "topic": "a/b"})
        assert st == 404
        time.sleep(0.3)
        assert sub.snapshot() == []  # a test does nothing
    finally:
        sub.close()


def test_devices_alerts_quarantine_and_recent_data(broker, daemons, tmp_path, certs):
    c = Console(broker, daemons, tmp_path)
    summary = harness.Sim.run(broker, tmp_path, "--things", 3, "--count", 40, "--rate", 50, "--seed", 5,
                              "--spike", "dev-0002:0.2:100:45")
    assert summary["failed"] == 0
    send(broker, certs, "dev-0003", ['{"temperature": ', '[1, 2]'])  # two rejects
    wait_until(lambda: c.d.metric("tidegate_messages_received_total") == 122, 20)
    lake = read_lake(c.d.lake)
    per = {t: sorted((r for r in lake if r["thing"] == t), key=lambda r: r["seq"]) for t in ("dev-0001", "dev-0002", "dev-0003")}
    st, body, _ = c.get("/api/devices")
    assert st == 200 and body["registry"] is False and "counters" in body["online_basis"]
    devs = {d["thing"]: d for d in body["devices"]}
    assert set(devs) == {"dev-0001", "dev-0002", "dev-0003"}
    for t in devs:
        assert devs[t]["messages_today"] == len(per[t]) == 40 and devs[t]["online"] is True
        assert devs[t]["registered"] is False
    assert devs["dev-0003"]["quarantined_today"] == 2 and devs["dev-0001"]["quarantined_today"] == 0
    st, one, _ = c.get("/api/devices/dev-0001")
    assert st == 200 and one["latest"]["seq"] == per["dev-0001"][-1]["seq"]
    # latest = the last accepted record as the lake has it (less msg_id, which the sink adds)
    st, body, _ = c.get("/api/things/dev-0002/latest")
    last = dict(per["dev-0002"][-1])
    last.pop("msg_id")
    assert st == 200 and body["record"] == last
    # alerts: the spike raised high-temperature on dev-0002
    st, body, _ = c.get("/api/alerts")
    assert [(a["alert"], a["thing"], a["rule"]) for a in body["active"]] == [("high-temperature", "dev-0002", "high-temperature-alert")]
    assert body["history"][0]["state"] == "raised" and body["history"][0]["thing"] == "dev-0002"
    # quarantine, filtered
    st, body, _ = c.get("/api/quarantine?thing=dev-0003")
    assert st == 200 and [i["reason"] for i in body["items"]] == ["not_object", "bad_json"]
    assert body["items"][1]["payload"] == '{"temperature": '
    st, body, _ = c.get("/api/quarantine?reason=bad_json")
    assert [i["thing"] for i in body["items"]] == ["dev-0003"]
    st, body, _ = c.get("/api/quarantine?thing=dev-0001")
    assert body["items"] == []
    # series: min/avg/max per step, against the lake's own numbers
    wait_until(lambda: c.d.metric("tidegate_retention_rows") == 120, 10)
    recs = per["dev-0001"]
    st, body, _ = c.get("/api/series?thing=dev-0001&field=temperature&since=-10m&step=1h")
    assert st == 200 and len(body["points"]) == 1, body
    p = body["points"][0]
    temps = [r["temperature"] for r in recs]
    assert p["n"] == 40 and abs(p["min"] - min(temps)) < 1e-9 and abs(p["max"] - max(temps)) < 1e-9
    assert abs(p["avg"] - sum(temps) / len(temps)) < 1e-6
    st, body, _ = c.get("/api/series?field=temperature&since=-10m&step=1h")
    assert st == 200 and sorted(body["series"]) == ["dev-0001", "dev-0002", "dev-0003"]
    assert body["series"]["dev-0002"][0]["max"] == 45
    # read-only SQL over the retention table, guarded by SQLite's authorizer
    st, body, _ = c.call("POST", "/api/query", body={"sql": "SELECT thing, count(*) AS n FROM samples GROUP BY thing ORDER BY thing"})
    assert st == 200 and body["rows"] == [["dev-0001", 40], ["dev-0002", 40], ["dev-0003", 40]] and body["columns"] == ["thing", "n"]
    st, body, _ = c.call("POST", "/api/query", body={"sql": "SELECT json_extract(body, '$.seq') FROM samples", "max_rows": 5})
    assert st == 200 and len(body["rows"]) == 5 and body["truncated"] is True
    for sql in ("DELETE FROM samples", "SELECT * FROM sqlite_master", "PRAGMA table_info(samples)",
                "ATTACH DATABASE '/tmp/x.db' AS x", "SELECT 1; DELETE FROM samples", "CREATE TABLE t(x)"):
        st, body, _ = c.call("POST", "/api/query", body={"sql": sql})
        assert st in (400, 403), (sql, st, body)
    st, body, _ = c.call("POST", "/api/query", body={
        "sql": "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT count(*) FROM n"})
    assert st == 408 and body["error"] == "query_timeout"
    assert c.d.metric("tidegate_retention_rows") == 120  # nothing above changed it


def test_sinks_backlog_and_retry_dead(broker, daemons, tmp_path, certs):
    down = harness.free_port()  # nothing listens there: the kinesis sink keeps retrying
    sinks = harness.DEFAULT_SINKS + f"""
[sink kin]
type = kinesis
stream = s
endpoint = http://127.0.0.1:{down}
access_key_id = AKIDEXAMPLE
secret_access_key = secret
retry_base = 50ms
retry_cap = 200ms
"""
    c = Console(broker, daemons, tmp_path, rules=(), extra="default_sinks = lake, kin\n", sinks=sinks)
    send(broker, certs, "dev-0001", [{"sensor_id": "dev-0001", "ts": i, "temperature": 20.0 + i} for i in range(5)])
    wait_until(lambda: len(read_lake(c.d.lake)) == 5, 15)
    time.sleep(2.1)  # past the backlog cache
    st, body, _ = c.get("/api/sinks")
    s = {x["name"]: x for x in body["sinks"]}
    assert s["lake"]["backlog_rows"] == 0 and s["lake"]["delivered_total"] == 5 and s["lake"]["up"] is True
    assert s["kin"]["backlog_rows"] == 5 and s["kin"]["backlog_bytes"] > 5 * 50 and s["kin"]["oldest_age_s"] > 1
    assert s["kin"]["up"] is False and s["kin"]["retries_total"] >= 5 and s["kin"]["dead_letters"] == 0
    # dead letters of the lake (as a poison batch leaves them), then requeued after "the fix"
    db = sqlite3.connect(str(tmp_path / "tidegate" / "data" / "outbox.db"), timeout=10)
    with db:
        for i in range(3):
            line = json.dumps({"thing": "dev-0009", "seq": 100 + i, "temperature": 1.5, "topic": "devices/dev-0009/telemetry"})
            db.execute("INSERT INTO dead(sink, id, created_ms, tbl, pkey, payload, error, dead_ms) VALUES(?,?,?,?,?,?,?,?)",
                       ("lake", 900000 + i, int(time.time() * 1000), "telemetry", "dev-0009", line.encode(), "rejected", 0))
    db.close()
    time.sleep(2.1)
    st, body, _ = c.get("/api/sinks")
    assert {x["name"]: x for x in body["sinks"]}["lake"]["dead_letters"] == 3
    st, body, _ = c.call("POST", "/api/sinks/lake/retry-dead")
    assert st == 200 and body == {"sink": "lake", "requeued": 3}
    wait_until(lambda: len([r for r in read_lake(c.d.lake) if r["thing"] == "dev-0009"]) == 3, 15, what="requeued rows delivered")
    got = sorted(r["seq"] for r in read_lake(c.d.lake) if r["thing"] == "dev-0009")
    assert got == [100, 101, 102]
    st, body, _ = c.get("/api/sinks")
    assert {x["name"]: x for x in body["sinks"]}["lake"]["dead_letters"] == 0
    st, body, _ = c.call("POST", "/api/sinks/lake/retry-dead")
    assert st == 200 and body["requeued"] == 0
    assert c.d.metric("tidegate_api_dead_requeued_total") == 3


def read_events(c, until, timeout=15):
    """Read SSE frames from /api/events until until(frames) holds; returns the frames."""
    s = socket.create_connection(("127.0.0.1", c.d.http_port), timeout=timeout)
    s.sendall(f"GET /api/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {c.token}\r\n\r\n".encode())
    buf, frames = b"", []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
            while b"\n\n" in buf:
                frame, buf = buf.split(b"\n\n", 1)
                ev, data = None, None
                for line in frame.decode(errors="replace").split("\n"):
                    if line.startswith("event: "):
                        ev = line[7:]
                    elif line.startswith("data: "):
                        data = json.loads(line[6:])
                if ev:
                    frames.append((ev, data))
            if until(frames):
                return frames
    finally:
        s.close()
    raise AssertionError(f"events never satisfied the condition: {frames[-10:]}")


def test_event_stream(broker, daemons, tmp_path, certs):
    c = Console(broker, daemons, tmp_path)
    out = {}

    def reader():
        out["frames"] = read_events(c, lambda f: {"alert", "quarantine", "rules"} <= {e for e, _ in f}
                                    and any(e == "stats" and d["accepted_total"] >= 3 for e, d in f), timeout=30)

    t = threading.Thread(target=reader)
    t.start()
    wait_until(lambda: c.d.metric("tidegate_api_sse_clients") == 1, 10)
    send(broker, certs, "dev-0004", [{"sensor_id": "s", "ts": i, "temperature": 41.0} for i in range(3)] + ["nope"])
    st, _, _ = c.call("PUT", "/api/rules/tap", body='{"sql": "SELECT * FROM \'x/y\'", "actions": []}')
    assert st == 201
    t.join(40)
    frames = out["frames"]
    alert = [d for e, d in frames if e == "alert"][0]
    assert alert["state"] == "raised" and alert["thing"] == "dev-0004" and alert["alert"] == "high-temperature"
    q = [d for e, d in frames if e == "quarantine"][0]
    assert q["thing"] == "dev-0004" and q["reason"] == "bad_json"
    assert [d for e, d in frames if e == "rules"][-1] == {"ok": True, "rules": 3}
    stats = [d for e, d in frames if e == "stats"][-1]
    assert stats["broker_connected"] is True and stats["sinks"][0]["name"] == "lake"
    wait_until(lambda: c.d.metric("tidegate_api_sse_clients") == 0, 10, what="stream closed")


def test_tls_api(broker, daemons, tmp_path, certs):
    c = Console(broker, daemons, tmp_path, tls=(certs.dir / "server.crt", certs.dir / "server.key", certs.ca))
    c.d.start(wait_connected=False)
    wait_until(lambda: c.get("/readyz", token=None)[0] == 200 if harness.port_open(c.d.http_port) else False, 20)
    st, body, _ = c.get("/api/rules")
    assert st == 200 and len(body["rules"]) == 2
    assert c.get("/api/rules", token="wrong")[0] == 401
    # plain HTTP on the TLS port gets no answer
    conn = http.client.HTTPConnection("127.0.0.1", c.d.http_port, timeout=3)
    try:
        conn.request("GET", "/healthz")
        plain = conn.getresponse().status
    except (OSError, http.client.HTTPException):
        plain = None
    assert plain != 200


def test_retention_trims_by_age(broker, daemons, tmp_path, certs):
    c = Console(broker, daemons, tmp_path, rules=(), extra="[retention]\nperiod = 2s\n")
    send(broker, certs, "dev-0001", [{"sensor_id": "s", "ts": i, "temperature": 20.0} for i in range(10)])
    wait_until(lambda: c.d.metric("tidegate_retention_rows") == 10, 10)
    time.sleep(2.5)
    send(broker, certs, "dev-0001", [{"sensor_id": "s", "ts": 100 + i, "temperature": 21.0} for i in range(3)])
    # the old rows go within a second of passing the period (an idle daemon trims too), the new
    # ones are written at most half a second after they were accepted
    wait_until(lambda: c.d.metric("tidegate_retention_trimmed_total") == 10 and c.d.metric("tidegate_retention_rows") == 3,
               10, what="old rows trimmed, new ones written")
    st, body, _ = c.call("POST", "/api/query", body={"sql": "SELECT json_extract(body, '$.ts') FROM samples ORDER BY id"})
    assert body["rows"] == [[100], [101], [102]]
    assert c.d.metric("tidegate_retention_disk_bytes") > 0


def test_console_off_without_token_file(broker, daemons, tmp_path):
    d = daemons(broker)
    assert d.http("/metrics")[0] == 200 and d.http("/healthz")[0] == 200 and d.http("/readyz")[0] == 200
    assert d.http("/api/rules")[0] == 404 and d.http("/")[0] == 404
    assert "tidegate_api_requests_total" not in d.http("/metrics")[1]


def test_token_new_and_refused_token_files(broker, tmp_path):
    f = tmp_path / "tok"
    r = subprocess.run([harness.BUILD / "tidegate", "token", "new", f], capture_output=True, text=True)
    assert r.returncode == 0 and str(f) in r.stdout
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
    tok = f.read_text().strip()
    assert len(tok) == 64 and int(tok, 16) >= 0
    r = subprocess.run([harness.BUILD / "tidegate", "token", "new", f], capture_output=True, text=True)
    assert r.returncode == 0 and f.read_text().strip() != tok  # a new one each time
    os.chmod(f, 0o644)
    d = harness.Daemon(broker, tmp_path, extra=f"token_file = {f}\n")
    d.start(wait_connected=False)
    assert d.proc.wait(20) != 0
    assert "readable by group or others" in d.log() and str(f) in d.log()


def test_devices_merges_registry_and_traffic(broker, daemons, tmp_path, certs):
    """/api/devices with a registry: registered things carry their attributes and, when they
    sent anything, the daemon's counters; things seen but not registered follow, once each."""
    db = tmp_path / "registry.db"
    for t, site in (("dev-0001", "plant-7"), ("dev-0005", "plant-9")):
        r = subprocess.run([harness.BUILD / "tidegate", "device", "--db", db, "register", t, "--attr", f"site={site}"],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    c = Console(broker, daemons, tmp_path, extra=f"[registry]\npath = {db}\n")
    summary = harness.Sim.run(broker, tmp_path, "--things", 2, "--count", 30, "--rate", 50, "--seed", 9)
    assert summary["failed"] == 0
    wait_until(lambda: c.d.metric("tidegate_messages_accepted_total") == 60, 20)
    st, body, _ = c.get("/api/devices")
    assert st == 200 and body["registry"] is True
    names = [d["thing"] for d in body["devices"]]
    assert sorted(names) == ["dev-0001", "dev-0002", "dev-0005"]  # each once
    devs = {d["thing"]: d for d in body["devices"]}
    assert devs["dev-0001"]["registered"] is True and devs["dev-0001"]["attributes"] == {"site": "plant-7"}
    assert devs["dev-0001"]["messages_today"] == 30 and devs["dev-0001"]["online"] is True
    assert devs["dev-0001"]["latest"]["thing"] == "dev-0001"
    assert devs["dev-0005"]["registered"] is True and devs["dev-0005"]["messages_today"] == 0
    assert devs["dev-0005"]["online"] is False and "latest" not in devs["dev-0005"]
    assert devs["dev-0002"]["registered"] is False and devs["dev-0002"]["messages_today"] == 30
    st, one, _ = c.get("/api/devices/dev-0005")
    assert st == 200 and one["registered"] is True and one["attributes"] == {"site": "plant-9"}
    st, one, _ = c.get("/api/devices/dev-0002")
    assert st == 200 and one["registered"] is False and one["messages_today"] == 30


def test_shadows_api(broker, daemons, tmp_path):
    """GET /api/shadows[/{thing}]: each live shadow with its document as a get answers it,
    after changes made over MQTT by the CLI (through the daemon); a deleted one is gone; bad
    parameters get a JSON 400; the console writes nothing."""
    c = Console(broker, daemons, tmp_path)
    cli = [str(harness.BUILD / "tidegate"), "shadow", "-c", str(c.d.conf)]

    def shadow(*args):
        r = subprocess.run(cli + list(args), capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)
    st, body, _ = c.get("/api/shadows")
    assert st == 200 and body["shadows"] == [] and body["enabled"] is True and body["truncated"] is False
    shadow("update", "dev-0001", "--desired", '{"led": "on", "cfg": {"rate": 5}}')
    shadow("update", "dev-0001", "--reported", '{"led": "off", "cfg": {"rate": 5}}')
    shadow("update", "dev-0001", "--name", "fw", "--reported", '{"version": "1.2.3"}')
    shadow("update", "dev-0002", "--reported", '{"led": "off"}')
    shadow("update", "dev-0003", "--name", "gone", "--desired", '{"x": 1}')
    shadow("delete", "dev-0003", "--name", "gone")
    st, body, _ = c.get("/api/shadows/dev-0001")
    assert st == 200 and body["thing"] == "dev-0001"
    by = {s["name"]: s for s in body["shadows"]}
    assert list(by) == ["", "fw"]
    classic = by[""]
    assert classic["version"] == 2 and classic["state"]["desired"] == {"led": "on", "cfg": {"rate": 5}}
    assert classic["state"]["reported"] == {"led": "off", "cfg": {"rate": 5}}
    assert classic["state"]["delta"] == {"led": "on"}  # what the device is still asked to change
    assert isinstance(classic["metadata"]["desired"]["led"]["timestamp"], int)
    assert 0 < classic["created_ms"] <= classic["updated_ms"] and classic["state_bytes"] > 0
    assert by["fw"]["version"] == 1 and by["fw"]["state"] == {"reported": {"version": "1.2.3"}}
    # the same through ?thing=, and the whole list in (thing, name) order, the deleted one absent
    st, same, _ = c.get("/api/shadows?thing=dev-0001")
    assert st == 200 and same["shadows"] == body["shadows"]
    st, body, _ = c.get("/api/shadows")
    assert [(s["thing"], s["name"]) for s in body["shadows"]] == [("dev-0001", ""), ("dev-0001", "fw"), ("dev-0002", "")]
    st, body, _ = c.get("/api/shadows?limit=2")
    assert len(body["shadows"]) == 2 and body["truncated"] is True
    st, body, _ = c.get("/api/shadows/dev-0009")
    assert st == 200 and body["shadows"] == []
    for bad in ("/api/shadows?limit=0", "/api/shadows?limit=x", "/api/shadows?thing=a/b"):
        st, body, _ = c.get(bad)
        assert st == 400 and body["error"] == "bad_request", (bad, body)
    st, body, _ = c.call("POST", "/api/shadows/dev-0001", body={"state": {"desired": {"led": "off"}}})
    assert st == 405
    st, body, _ = c.get("/api/shadows", token="wrong")
    assert st == 401
    # after a change the page's next poll sees it
    shadow("update", "dev-0001", "--reported", '{"led": "on"}')
    st, body, _ = c.get("/api/shadows/dev-0001")
    classic = body["shadows"][0]
    assert classic["version"] == 3 and "delta" not in classic["state"]
