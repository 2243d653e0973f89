"""Issue 12 items 6-9 — the configuration as documented, and one validation path.

* Every ```ini block of README.md and docs/*.md passes `tidegate check-config`. A block that
  is a whole config (it has a [broker] section) is checked as it is, with the installed paths
  (/etc/tidegate/..., /var/lib/tidegate) mapped to real files by harness.installed_paths. A
  fragment is wrapped into a minimal config: `data_dir = <tmp>` put before it unless it sets
  data_dir, and a `[broker]` section with the test PKI's ca_file/cert_file/key_file put after
  it for the keys it does not set (sections may be reopened; a key given twice may not). AWS
  credentials come from the environment, as the README says.
* Each configuration `run` refuses at start is refused the same way, with the same message
  and position, by `check-config` (which systemd's ExecStartPre relies on).
* check-config prints a URL's password redacted.
* Without a [sink lake] section the lake `default_sinks` names by default is real: records
  land under <data_dir>/lake.
"""
import json
import os
import re
import subprocess

import pytest

import harness
from harness import read_lake, wait_until

TIDEGATE = harness.BUILD / "tidegate"
AWS_ENV = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG"}


def ini_blocks():
    docs = [harness.REPO / "README.md", *sorted((harness.REPO / "docs").glob("*.md"))]
    out = []
    for doc in docs:
        text = doc.read_text()
        for m in re.finditer(r"^```ini\n(.*?)^```", text, re.S | re.M):
            line = text[:m.start()].count("\n") + 2
            out.append((f"{doc.name}:{line}", m.group(1)))
    return out


BLOCKS = ini_blocks()


def sets(block, key):
    return re.search(rf"^\s*{key}\s*=", block, re.M) is not None


def wrap(block, certs, tmp):
    if "[broker]" in block:
        return harness.installed_paths(block, certs, tmp)
    head = "" if sets(block, "data_dir") else f"data_dir = {tmp}/data\n"
    tls = {"ca_file": certs.ca, "cert_file": certs.dir / "gateway.crt", "key_file": certs.dir / "gateway.key"}
    tail = "".join(f"{k} = {v}\n" for k, v in tls.items() if not sets(block, k))
    return harness.installed_paths(head + block + ("\n[broker]\n" + tail if tail else ""), certs, tmp)


def check_config(path, env=None):
    return subprocess.run([TIDEGATE, "check-config", "-c", path], capture_output=True, text=True,
                          env=dict(os.environ, **(env or {})), timeout=30)


def test_docs_have_config_blocks():
    names = [n for n, _ in BLOCKS]
    assert any(n.startswith("README.md") for n in names) and len(names) >= 2, names


@pytest.mark.parametrize("where,block", BLOCKS, ids=[n for n, _ in BLOCKS])
def test_doc_config_block_checks(where, block, certs, tmp_path):
    conf = tmp_path / "block.conf"
    conf.write_text(wrap(block, certs, tmp_path))
    r = check_config(conf, AWS_ENV)
    assert r.returncode == 0, f"{where}:\n{conf.read_text()}\n{r.stderr}"
    # comments after values are not part of them
    assert "#" not in "".join(ln for ln in r.stdout.splitlines() if not ln.startswith("#")), r.stdout


BAD = [
    ("kinesis stream name",
     "[ingest]\ndefault_sinks = kin\n[sink kin]\ntype = kinesis\nstream = bad stream name!\n",
     ":16:10: [sink kin] kinesis: stream name \"bad stream name!\" is not 1-128 characters"),
    ("access_key_id alone",
     "[ingest]\ndefault_sinks = kin\n[sink kin]\ntype = kinesis\nstream = s\naccess_key_id = AKID\n",
     ":17:17: [sink kin] access_key_id is set but secret_access_key is not"),
    ("missing rules_dir",
     "[ingest]\nrules_dir = {tmp}/no-such-rules\n",
     ":13:13: [ingest] rules_dir: cannot read {tmp}/no-such-rules: No such file or directory"),
    ("invalid subscribe filter",
     "[broker]\nsubscribe = devices/#/bad\n",
     ":13:13: [broker] subscribe: 'devices/#/bad' is not a valid MQTT topic filter"),
    ("broker port = http port",
     "[http]\nport = {port}\n",
     ":13:8: [http] port {port} is the broker's port too ([broker] port, "),
    ("two file sinks, one path",
     "[sink copy]\ntype = file\npath = {tmp}/lake/\n",
     ":14:8: [sink copy] path {tmp}/lake/ is also the path of [sink lake] ("),
    ("invalid rule, sink names checked",
     "[ingest]\nrules_dir = {rules}\n",
     "bad.json:1:"),
]


def base_config(tmp, port, extra):
    # `extra` starts on line 13, so the positions above are stable
    return (f"gateway_id = gw-test\ndata_dir = {tmp}/data\n[broker]\ntls = false\nport = {port}\n"
            f"[http]\nbind = 127.0.0.1\n[sink lake]\ntype = file\npath = {tmp}/lake\n\n{extra}")


@pytest.mark.parametrize("name,extra,needle", BAD, ids=[b[0] for b in BAD])
def test_check_config_refuses_what_run_refuses(name, extra, needle, tmp_path):
    port = harness.free_port()
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "bad.json").write_text(json.dumps({"sql": "SELECT * FROM 'devices/+/telemetry'",
                                                "actions": [{"sink": {"name": "nowhere"}}]}))
    conf = tmp_path / "t.conf"
    conf.write_text(base_config(tmp_path, port, extra.format(tmp=tmp_path, port=port, rules=rules)))
    needle = needle.format(tmp=tmp_path, port=port)
    checked = check_config(conf)
    assert checked.returncode == 2, checked.stdout
    assert needle in checked.stderr, checked.stderr
    ran = subprocess.run([TIDEGATE, "run", "-c", conf], capture_output=True, text=True, timeout=30)
    assert ran.returncode == 2, ran.stderr
    # the same message from run, as a log line
    errors = [r["error"] for r in harness.daemon_log_records(ran.stderr) if r.get("sub") == "config"]
    assert errors == checked.stderr.strip().splitlines(), (errors, checked.stderr)
    assert not (tmp_path / "data").exists(), "run created its data before refusing"


def test_check_config_redacts_url_credentials(tmp_path):
    conf = tmp_path / "t.conf"
    conf.write_text(base_config(tmp_path, 1883, "[ingest]\ndefault_sinks = lake, up\n[sink up]\ntype = s3\n"
                                "bucket = b\nendpoint = http://minio:s3cr3t@127.0.0.1:9000\n"))
    r = check_config(conf, AWS_ENV)
    assert r.returncode == 0, r.stderr
    assert "s3cr3t" not in r.stdout and "endpoint = http://minio:<redacted>@127.0.0.1:9000" in r.stdout


def test_builtin_lake_under_data_dir(broker, daemons, certs):
    d = daemons(broker, sinks="")  # no [sink lake]: default_sinks = lake means the built-in one
    cert, key = certs.thing("dev-0003")
    r = harness.mosquitto_pub(broker, cert, key, "devices/dev-0003/telemetry",
                              [json.dumps({"sensor_id": "s", "ts": 1, "temperature": 20.5})])
    assert r.returncode == 0, r.stderr
    lake = d.dir / "data" / "lake"
    wait_until(lambda: read_lake(lake), 15, what="a record in <data_dir>/lake")
    d.stop()
    recs = read_lake(lake)
    assert [(x["thing"], x["temperature"]) for x in recs] == [("dev-0003", 20.5)]
