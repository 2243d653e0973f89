"""Issue 12 items 14 and 15 — every line the daemon writes is one logfmt record.

The daemon's whole log is read back with a strict logfmt parser (harness.parse_logfmt, go-logfmt's
rules) after it has logged text it does not control: a rule error that quotes a field name,
a device's topic with blanks, quotes, '=' and a backslash, and libmicrohttpd's own messages
about a malformed HTTP request. Every line must parse, and the values must read back as the
text that went in.
"""
import json
import socket
import subprocess

import harness
from harness import daemon_log_records, wait_until

HOSTILE_TOPIC = 'devices/dev-0001/x "y"=z\\w t'
BAD_RULE = {"sql": "SELECT * FROM 'devices/+/telemetry'",
            "actions": [{"alert": {"name": "hot", "severity": "loud"}}]}


def test_log_values_escaped(broker, daemons, certs, tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "hot-alerts.json").write_text((harness.REPO / "rules" / "hot-alerts.json").read_text())
    d = daemons(broker, top="log_level = debug",
                extra=f"[ingest]\nrules_dir = {rules}\n[broker]\nsubscribe = devices/#\n")
    cert, key = certs.thing("dev-0001")
    r = harness.mosquitto_pub(broker, cert, key, HOSTILE_TOPIC, ['{"a": "unterminated'])
    assert r.returncode == 0, r.stderr
    wait_until(lambda: d.metric("tidegate_messages_quarantined_total", 0) >= 1, 10, what="the quarantine")
    (rules / "bad.json").write_text(json.dumps(BAD_RULE))
    wait_until(lambda: d.metric("tidegate_rules_reload_failures_total", 0) >= 1, 10, what="a refused reload")
    d.stop()
    recs = daemon_log_records(d.log())  # raises on any line that is not logfmt
    q = [r for r in recs if r.get("msg") == "quarantined"]
    assert q and q[0]["topic"] == HOSTILE_TOPIC and q[0]["reason"] == "bad_json", q
    errs = [r["error"] for r in recs if r.get("sub") == "rules" and r.get("level") == "error"]
    assert any('alert "severity" must be info, minor, major or critical' in e for e in errs), errs


def raw_http(port, data):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                b = s.recv(4096)
            except socket.timeout:
                break
            if not b:
                break
            chunks.append(b)
    return b"".join(chunks).decode(errors="replace")


def test_http_library_messages_go_through_the_logger(broker, daemons):
    d = daemons(broker)
    # a header line without a colon, and a Content-Length that is not a number: libmicrohttpd
    # answers 400 and reports each
    reply = raw_http(d.http_port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nbadheader\r\n\r\n")
    assert reply.startswith("HTTP/1.1 400"), reply[:200]
    reply = raw_http(d.http_port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
    assert reply.startswith("HTTP/1.1 400"), reply[:200]
    wait_until(lambda: d.log().count("sub=http") >= 3, 5, what="the http log lines")
    assert "EXTERNAL_LOGGER" not in d.log()  # set first, so no message escapes it
    d.stop()
    recs = daemon_log_records(d.log())  # a raw library line fails here
    http = [r for r in recs if r.get("sub") == "http"]
    assert http and all(r["level"] == "warn" and r["msg"] for r in http), http
    assert any("Content-Length" in r["msg"] for r in http), http
    assert any("HTTP response code is 400" in r["msg"] and "<html>" not in r["msg"] for r in http), http
