"""Issue 12 items 2 and 3 — rule republishes as the broker answers them, on the shipped
broker configuration.

* A republish the broker refuses (PUBACK reason 135 under the shipped ACL) is the action's
  failure: counted in tidegate_rules_action_errors_total and not as republished, logged at
  most once per interval with a count, and the rule's errorAction runs with the message that
  fired the rule, when the refusal arrives.
* Republish `headers` go out as MQTT v5 properties, templates expanded, as a paho v5
  subscriber reads them.
* Every shipped rule (rules/ and rules/examples/) is loaded against the shipped ACL — and
  against the shipped policies through the auth plugin — and its output arrives where it
  says; the broker refuses none of it.
"""
import base64
import http.server
import json
import re
import shutil
import subprocess
import threading
import time

import pytest

import harness
from harness import Collector, read_lake, wait_until


def write_rule(rd, name, rule):
    rd.mkdir(exist_ok=True)
    (rd / f"{name}.json").write_text(json.dumps(rule, indent=1))


def refusal_lines(log, rule):
    return [ln for ln in log.splitlines()
            if 'msg="publish refused by the broker"' in ln and f" rule={rule} " in ln]


def test_refused_republish_is_an_action_error_and_runs_the_error_action(broker, daemons, tmp_path, certs):
    rd = tmp_path / "rules"
    # humid/ is not in the gateway's ACL: every publish there is refused with reason 135
    write_rule(rd, "humid", {
        "sql": "SET @t = temperature SELECT temperature, topic(2) AS thing FROM 'devices/+/telemetry'",
        "actions": [{"republish": {"topic": "humid/${topic(2)}", "qos": 1}}],
        "errorAction": {"republish": {"topic": "errors/${topic(2)}/humid/${@t}", "qos": 1}}})
    write_rule(rd, "fine", {  # the same message, allowed: acknowledged and counted
        "sql": "SELECT temperature FROM 'devices/+/telemetry'",
        "actions": [{"republish": {"topic": "alerts/${topic(2)}/fine", "qos": 1}}]})
    sub = Collector(broker, ["errors/#", "alerts/#"])
    try:
        d = daemons(broker, extra=f"[ingest]\nrules_dir = {rd}\nlog_repeat_interval = 1s\n")
        cert, key = certs.thing("dev-0001")
        first = json.dumps({"sensor_id": "dev-0001", "temperature": 21.5})
        assert harness.mosquitto_pub(broker, cert, key, "devices/dev-0001/telemetry", [first]).returncode == 0
        wait_until(lambda: len(sub.snapshot()) >= 2, 10, what="the errorAction's and the allowed republish")
        wait_until(lambda: d.metric("tidegate_rules_action_errors_total") == 1, 5, what="the refusal counted")
        got = dict(sub.snapshot())
        assert got["alerts/dev-0001/fine"] == {"temperature": 21.5}
        err = got["errors/dev-0001/humid/21.5"]  # the errorAction's template saw the message's SET variable
        assert err["ruleName"] == "humid"
        assert err["topic"] == "devices/dev-0001/telemetry"
        assert base64.b64decode(err["base64OriginalPayload"]).decode() == first
        assert err["failures"] == [{"failedAction": "RepublishAction", "failedResource": "humid/dev-0001",
                                    "errorMessage": "the broker refused the publish: Not authorized (135)"}]
        m = d.metrics()
        assert m["tidegate_publish_refused_total"] == 1
        assert m["tidegate_republished_rule_total"] == 2  # fine + the errorAction, not humid
        assert m["tidegate_republished_total"] == 2
        lines = refusal_lines(d.log(), "humid")
        assert len(lines) == 1 and "reason=135" in lines[0] and "count=1" in lines[0], lines
        assert "topic=humid/dev-0001" in lines[0]

        # a burst: every refusal counted and its errorAction run, the log rate-limited
        burst = [json.dumps({"sensor_id": "dev-0001", "temperature": 30 + i}) for i in range(20)]
        assert harness.mosquitto_pub(broker, cert, key, "devices/dev-0001/telemetry", burst).returncode == 0
        wait_until(lambda: d.metric("tidegate_rules_action_errors_total") == 21, 10, what="21 refusals")
        wait_until(lambda: sum(int(re.search(r" count=(\d+)", ln).group(1))
                               for ln in refusal_lines(d.log(), "humid")) == 21, 5,
                   what="every refusal reported with its count")
        wait_until(lambda: len([t for t, _ in sub.snapshot() if t.startswith("errors/")]) == 21, 10,
                   what="21 errorAction messages")
        lines = refusal_lines(d.log(), "humid")
        assert len(lines) <= 4, lines  # not one per refusal
        assert d.metric("tidegate_publish_refused_total") == 21
    finally:
        sub.close()


def test_republish_headers_are_mqtt5_properties(broker, daemons, tmp_path, certs):
    rd = tmp_path / "rules"
    write_rule(rd, "with-headers", {
        "sql": "SELECT temperature, req FROM 'devices/+/telemetry' WHERE temperature > 0",
        "actions": [{"republish": {"topic": "alerts/${topic(2)}/h", "qos": 1, "headers": {
            "payloadFormatIndicator": "UTF8_DATA",
            "contentType": "application/json; unit=${unit}",
            "responseTopic": "commands/${topic(2)}/ack",
            "correlationData": "${encode(req, 'base64')}",
            "messageExpiry": "3600",
            "userProperties": [{"key": "site", "value": "${site}"}, {"key": "thing", "value": "${topic(2)}"},
                               {"key": "site", "value": "second"}]}}}],
        "errorAction": {"republish": {"topic": "errors/${topic(2)}/headers", "qos": 1}}})
    write_rule(rd, "bad-expiry", {  # a template that expands to something that is no header value
        "sql": "SELECT temperature FROM 'devices/+/telemetry' WHERE temperature < 0",
        "actions": [{"republish": {"topic": "alerts/${topic(2)}/never", "qos": 1,
                                   "headers": {"messageExpiry": "${unit}"}}}],
        "errorAction": {"republish": {"topic": "errors/${topic(2)}/headers", "qos": 1}}})
    sub = Collector(broker, ["alerts/#", "errors/#"])
    try:
        d = daemons(broker, extra=f"[ingest]\nrules_dir = {rd}\n")
        cert, key = certs.thing("dev-0002")
        msgs = [json.dumps({"temperature": 22.5, "unit": "C", "site": "north", "req": "req-42"}),
                json.dumps({"temperature": -5, "unit": "C", "site": "north", "req": "x"})]
        assert harness.mosquitto_pub(broker, cert, key, "devices/dev-0002/telemetry", msgs).returncode == 0
        wait_until(lambda: len(sub.messages()) >= 2, 10, what="the republish and the errorAction")
        got = {m["topic"]: m for m in sub.messages()}
    finally:
        sub.close()
    m = got["alerts/dev-0002/h"]
    assert json.loads(m["payload"]) == {"temperature": 22.5, "req": "req-42"}
    assert m["content_type"] == "application/json; unit=C"
    assert m["response_topic"] == "commands/dev-0002/ack"
    assert m["correlation_data"] == b"req-42"
    assert m["payload_format"] == 1
    assert 3590 <= m["message_expiry"] <= 3600  # the broker passes on what is left of it
    assert m["user_properties"] == [("site", "north"), ("thing", "dev-0002"), ("site", "second")]
    e = json.loads(got["errors/dev-0002/headers"]["payload"])
    assert e["ruleName"] == "bad-expiry"
    assert e["failures"][0]["errorMessage"] == \
        "headers.messageExpiry: 'C' is not a number of seconds (0 to 4294967295)"
    assert "alerts/dev-0002/never" not in got
    assert d.metric("tidegate_rules_action_errors_total") == 1


# ---- every shipped rule, on the shipped broker configuration -------------------------------

SHIPPED = sorted(list((harness.REPO / "rules").glob("*.json")) + list((harness.REPO / "rules" / "examples").glob("*.json")))
T0 = 1795600800000  # event time of the first reading (alerts count time on it)


def reading(**kw):
    return json.dumps({"sensor_id": "dev-0001", **kw})


# rule name -> (topic published on, payloads, where the output arrives, check of the output)
SCENARIOS = {
    "hot-alerts": ("devices/dev-0001/telemetry", [reading(ts=T0 + 1, temperature=31.5)],
                   "alerts/dev-0001", lambda p: p.get("temperature") == 31.5 and p.get("thing") == "dev-0001"),
    "high-temperature-alert": ("devices/dev-0001/telemetry",
                               [reading(ts=T0 + 2000 + i * 1000, temperature=41 + i) for i in range(3)],
                               "alerts/dev-0001/high-temperature",
                               lambda p: p.get("state") == "raised" and p.get("severity") == "major"),
    "battery-low-alert": ("devices/dev-0001/telemetry",  # forSeconds 600 of event time
                          [reading(ts=T0 + 3, battery=0.1), reading(ts=T0 + 601003, battery=0.09)],
                          "alerts/dev-0001/battery-low", lambda p: p.get("state") == "raised"),
    "critical-webhook": ("devices/dev-0001/telemetry", [reading(ts=T0 + 4, temperature=65, pressure=1000)],
                         "webhook /hooks/dev-0001", lambda p: p.get("hot") is True and p.get("client") == "dev-0001"),
    "disabled-debug-tap": ("devices/dev-0001/telemetry", [reading(ts=T0 + 5, temperature=20.5)],
                           "views/debug/devices/dev-0001/telemetry", lambda p: p.get("temperature") == 20.5),
    "fahrenheit-republish": ("devices/dev-0001/telemetry", [reading(ts=T0 + 6, temperature=25)],
                             "views/dev-0001/fahrenheit",
                             lambda p: p == {"thing": "dev-0001", "fahrenheit": 77, "comfort": "warm"}),
    "senml-temperature": ("devices/dev-0001/senml",
                          [json.dumps({"e": [{"n": "temperature", "v": 22.5}, {"n": "light", "v": 135}]})],
                          "views/dev-0001/senml",
                          lambda p: p == {"temperature": 22.5, "sensors": ["temperature", "light"]}),
    "with-error-action": ("devices/dev-0001/telemetry", [reading(ts=T0 + 7, temperature=19.0)],
                          "lake telemetry", lambda p: p.get("temperature") == 19.0 and isinstance(p.get("received"), int)),
}


class Hooks:
    """The webhook receiver critical-webhook POSTs to (its URL's port rewritten to ours)."""

    def __init__(self):
        got, lock = [], threading.Lock()

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with lock:
                    got.append((self.path, json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.got, self.lock = got, lock
        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        self.port = self.srv.server_address[1]

    def snapshot(self):
        with self.lock:
            return list(self.got)

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


@pytest.mark.parametrize("mode", ["acl", "policies"])
def test_shipped_rules_output_arrives_under_the_shipped_acl(certs, tmp_path, mode):
    names = {p.stem for p in SHIPPED}
    assert names == set(SCENARIOS), f"every shipped rule needs a scenario here: {sorted(names ^ set(SCENARIOS))}"
    hooks = Hooks()
    rd = tmp_path / "rules"
    rd.mkdir()
    for p in SHIPPED:
        text = p.read_text().replace("http://127.0.0.1:8088/", f"http://127.0.0.1:{hooks.port}/")
        rule = json.loads(text)
        rule["ruleDisabled"] = False  # the debug tap ships disabled; its output must still be allowed
        (rd / p.name).write_text(json.dumps(rule))
    extra = []
    if mode == "policies":  # the auth plugin applies packaging/mosquitto/policies/ instead of the ACL
        db = tmp_path / "registry.db"
        r = subprocess.run([harness.BUILD / "tidegate", "device", "--db", db, "register", "dev-0001",
                            "--cert", certs.thing("dev-0001")[0]], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        extra = ["--plugin", harness.BUILD / "tidegate_auth.so", "--registry", db]
    broker = harness.Broker(certs, tmp_path, extra_args=extra).start()
    d = None
    try:
        sub = Collector(broker, ["alerts/#", "views/#", "errors/#"])
        try:
            d = harness.Daemon(broker, tmp_path, extra=(
                f"[ingest]\nrules_dir = {rd}\n[broker]\nsubscribe = devices/+/telemetry, devices/+/senml\n"),
                sinks=harness.DEFAULT_SINKS + "\n[sink hooks]\ntype = webhook\n").start()
            cert, key = certs.thing("dev-0001")
            for name in sorted(SCENARIOS):
                topic, payloads, _, _ = SCENARIOS[name]
                r = harness.mosquitto_pub(broker, cert, key, topic, payloads, client_id="dev-0001")
                assert r.returncode == 0, f"{name}: {r.stderr}"

            def outputs(name):
                _, _, where, check = SCENARIOS[name]
                if where.startswith("webhook "):
                    return [b for path, b in hooks.snapshot() if path == where.split()[1] and check(b)]
                if where.startswith("lake "):
                    return [x for x in read_lake(d.lake, where.split()[1]) if "received" in x and check(x)]
                return [p for t, p in sub.snapshot() if t == where and check(p)]

            missing = lambda: [n for n in sorted(SCENARIOS) if not outputs(n)]
            try:
                wait_until(lambda: not missing(), 20, what="every shipped rule's output")
            except TimeoutError:
                raise AssertionError(f"{mode}: no output from {missing()}\nreceived: {sub.snapshot()}\n"
                                     f"{d.log()[-3000:]}")
            m = d.metrics()
            assert m["tidegate_publish_refused_total"] == 0, d.log()[-3000:]
            assert m["tidegate_rules_action_errors_total"] == 0, d.log()[-3000:]
            assert not [t for t, _ in sub.snapshot() if t.startswith("errors/")]
        finally:
            sub.close()
    finally:
        rc = d.stop() if d else 0
        broker.stop()
        hooks.close()
    assert rc == 0, d.log()[-3000:]
