"""The kinesis and s3 sinks against real peers on 127.0.0.1 (kinesalite 3.3.3, s3rver
3.7.1), driven directly by tests/tools/sink_send (no daemon), checked with boto3.

What is asserted: every record the sink reports OK arrives exactly once (by msg_id) with
the right partition key / object key layout and intact NDJSON; records reported POISON
do not arrive and do not hold the rest back; whole-call failures (missing stream, bad
signature, peer down) leave records RETRY and a later call delivers them. One test uses
a scripted loopback HTTP peer to make Kinesis answer 400 ValidationException for one
record, which kinesalite cannot be made to do (the sink screens those records out
before sending), to check that the sink narrows the failure down to that record.

Run: /usr/bin/python3 -m pytest -q tests/integration/test_sinks_peers.py
(needs tests/node_modules: tests/integration/npm-peers.sh; and build/rel/tools/sink_send,
or TIDEGATE_BUILD=<build dir> pointing at a build with tools/sink_send.)
"""

import base64
import collections
import gzip
import hashlib
import json
import os
import re
import subprocess

import pytest

import aws_peers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("TIDEGATE_BUILD", os.path.join(ROOT, "build", "rel"))
SINK_SEND = os.path.join(BUILD, "tools", "sink_send")
KEY_RE = re.compile(r"^(?P<prefix>.*/)?(?P<table>[^/]+)/year=(?P<y>\d{4})/month=(?P<m>\d\d)/"
                    r"day=(?P<d>\d\d)/hour=(?P<h>\d\d)/(?P<gw>.+)-(?P<first>\d+)-(?P<last>\d+)\.json\.gz$")
HOUR_MS = 3600 * 1000


def run_sink(sink_type, args, creds, check_rc=None):
    """Run sink_send; returns (statuses by id, per-id rows, summary dict, stderr)."""
    if not os.path.exists(SINK_SEND):
        pytest.fail("%s missing: make %s" % (SINK_SEND, os.path.relpath(SINK_SEND, ROOT)))
    env = dict(os.environ)
    # Only the test's credentials, and never a proxy between us and 127.0.0.1.
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "http_proxy",
              "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
        env.pop(k, None)
    env.update(creds)
    env["ASAN_OPTIONS"] = "detect_leaks=1:exitcode=86"
    env["UBSAN_OPTIONS"] = "halt_on_error=1:exitcode=87"
    p = subprocess.run([SINK_SEND, sink_type] + [str(a) for a in args], env=env,
                       capture_output=True, text=True, timeout=120)
    assert "Sanitizer" not in p.stderr and "runtime error" not in p.stderr, p.stderr
    assert p.returncode in (0, 1), (p.returncode, p.stderr)
    rows, status = {}, {}
    summary = None
    for line in p.stdout.splitlines():
        f = line.split()
        if f[0] == "summary":
            summary = dict(kv.split("=") for kv in f[1:])
            summary = {k: int(v) for k, v in summary.items()}
            continue
        rid = int(f[0])
        rows[rid] = {"msg_id": f[1], "table": f[2], "pkey": f[3], "status": f[4]}
        status[rid] = f[4]
    assert summary is not None, p.stdout + p.stderr
    # Exit status 0 exactly when nothing is left to retry.
    assert (p.returncode == 0) == (summary["retry"] == 0 and summary["failed_calls"] == 0)
    if check_rc is not None:
        assert p.returncode == check_rc, p.stderr
    return status, rows, summary, p.stderr


KIN_CREDS = {"AWS_ACCESS_KEY_ID": aws_peers.KINESIS_KEY,
             "AWS_SECRET_ACCESS_KEY": aws_peers.KINESIS_SECRET}
S3_CREDS = {"AWS_ACCESS_KEY_ID": aws_peers.S3RVER_KEY,
            "AWS_SECRET_ACCESS_KEY": aws_peers.S3RVER_SECRET}


@pytest.fixture(scope="module")
def kinesalite():
    with aws_peers.Kinesalite() as k:
        yield k


@pytest.fixture(scope="module")
def s3rver():
    with aws_peers.S3rver(bucket="lake") as s:
        yield s


def by_msg_id(records):
    out = collections.Counter()
    for r in records:
        out[json.loads(r["data"])["msg_id"]] += 1
    return out


# ---- Kinesis ------------------------------------------------------------------------------

def test_kinesis_delivers_each_record_once_with_its_partition_key(kinesalite):
    kinesalite.create_stream("tg-main", shards=4)
    n = 3000
    status, rows, summary, err = run_sink("kinesis", [
        "--count", n, "--pkeys", 37, "--gateway-id", "gw-k",
        "--big", "100:1100000",        # over 1 MiB: poison, never sent
        "--empty-pkey", 200,           # no partition key: poison, never sent
        "stream=tg-main", "endpoint=" + kinesalite.endpoint], KIN_CREDS, check_rc=0)
    assert summary["ok"] == n - 2 and summary["poison"] == 2 and summary["retry"] == 0
    assert status[100] == "POISON" and status[200] == "POISON"
    assert summary["max_records"] == 500
    assert summary["calls"] >= n // 500  # batches sized by the sink's limits

    recs = aws_peers.read_kinesis(kinesalite.endpoint, "tg-main")
    counts = by_msg_id(recs)
    want = {r["msg_id"] for r in rows.values() if r["status"] == "OK"}
    assert set(counts) == want
    dups = {m: c for m, c in counts.items() if c != 1}
    assert not dups, "duplicates: %r" % list(dups.items())[:5]
    assert "gw-k-100" not in counts and "gw-k-200" not in counts
    shards = set()
    for r in recs:
        assert r["data"].endswith(b"\n") and r["data"].count(b"\n") == 1
        doc = json.loads(r["data"])
        rid = int(doc["msg_id"].rsplit("-", 1)[1])
        assert r["pkey"] == rows[rid]["pkey"] == doc["thing"]
        shards.add(r["shard"])
    assert len(shards) > 1  # 37 keys over 4 shards


def test_kinesis_missing_stream_is_retried_not_dead_lettered(kinesalite):
    args = ["--count", 20, "--gateway-id", "gw-m", "stream=tg-late", "endpoint=" + kinesalite.endpoint]
    status, _, summary, err = run_sink("kinesis", args, KIN_CREDS, check_rc=1)
    assert summary["retry"] == 20 and summary["ok"] == 0 and summary["poison"] == 0
    assert "ResourceNotFoundException" in err
    # The operator creates the stream; the same records then go through.
    kinesalite.create_stream("tg-late", shards=1)
    status, _, summary, _ = run_sink("kinesis", args, KIN_CREDS, check_rc=0)
    assert summary["ok"] == 20
    assert by_msg_id(aws_peers.read_kinesis(kinesalite.endpoint, "tg-late")) == \
        {"gw-m-%d" % i: 1 for i in range(1, 21)}


def test_kinesis_peer_down_then_back():
    with aws_peers.Kinesalite() as kin:
        kin.create_stream("tg-out", shards=2)
        kin.stop()
        args = ["--count", 50, "--gateway-id", "gw-o", "stream=tg-out", "timeout=3s",
                "endpoint=" + kin.endpoint]
        _, _, summary, err = run_sink("kinesis", args, KIN_CREDS, check_rc=1)
        assert summary["retry"] == 50 and summary["failed_calls"] == summary["calls"]
        assert "127.0.0.1" in err
        kin.start()  # same port, same leveldb directory: the stream is still there
        _, _, summary, _ = run_sink("kinesis", args, KIN_CREDS, check_rc=0)
        assert summary["ok"] == 50
        assert by_msg_id(aws_peers.read_kinesis(kin.endpoint, "tg-out")) == \
            {"gw-o-%d" % i: 1 for i in range(1, 51)}


def test_kinesis_config_credentials_and_session_token(kinesalite):
    kinesalite.create_stream("tg-cfg", shards=1)
    _, _, summary, _ = run_sink("kinesis", [
        "--count", 5, "stream=tg-cfg", "endpoint=" + kinesalite.endpoint,
        "access_key_id=AKIDCFG", "secret_access_key=cfgsecret", "session_token=tok"], {}, check_rc=0)
    assert summary["ok"] == 5
    # No credentials anywhere: refused at open, before any record is touched.
    p = subprocess.run([SINK_SEND, "kinesis", "stream=tg-cfg", "endpoint=" + kinesalite.endpoint],
                       env={"PATH": os.environ.get("PATH", "")}, capture_output=True, text=True)
    assert p.returncode == 2 and "AWS_ACCESS_KEY_ID" in p.stderr


def _kinesis_script(bad):
    """PutRecords answers as Kinesis would give them if it refused the content of the
    records whose msg_id is in bad: the whole call fails with 400 ValidationException."""
    def respond(method, path, headers, body):
        req = json.loads(body)
        ids = [json.loads(base64.b64decode(r["Data"]))["msg_id"] for r in req["Records"]]
        if bad & set(ids):
            out, code = {"__type": "ValidationException", "message": "1 validation error detected"}, 400
        else:
            out, code = {"FailedRecordCount": 0,
                         "Records": [{"SequenceNumber": str(i), "ShardId": "shardId-0"}
                                     for i in range(len(ids))]}, 200
        return code, {"Content-Type": "application/x-amz-json-1.1"}, json.dumps(out).encode()
    return respond


def _ids(req):
    return [json.loads(base64.b64decode(r["Data"]))["msg_id"] for r in json.loads(req["body"])["Records"]]


def test_kinesis_validation_error_is_narrowed_to_the_bad_record():
    with aws_peers.ScriptedPeer(_kinesis_script({"gw-v-7"}), aws_peers.KINESIS_SECRET) as peer:
        status, _, summary, err = run_sink("kinesis", [
            "--count", 16, "--gateway-id", "gw-v", "stream=s", "region=eu-west-1",
            "endpoint=" + peer.endpoint], KIN_CREDS, check_rc=0)
    assert status[7] == "POISON"
    assert all(s == "OK" for i, s in status.items() if i != 7)
    assert "ValidationException" in err
    calls = peer.requests
    # 16 -> 8 -> 4 -> 2 -> 1 on the bad side, one good half at each level: 1 + 2 * 4 calls.
    assert len(calls) == 9
    delivered = [i for c in calls for i in _ids(c) if "gw-v-7" not in _ids(c)]
    assert sorted(delivered) == sorted("gw-v-%d" % i for i in range(1, 17) if i != 7)
    # One keep-alive connection for the whole batch.
    assert len({c["client"] for c in calls}) == 1
    for c in calls:
        assert c["method"] == "POST" and c["path"] == "/"
        assert c["headers"]["x-amz-target"] == "Kinesis_20131202.PutRecords"
        assert c["headers"]["content-type"] == "application/x-amz-json-1.1"
        assert c["sig_ok"], c["sig_why"]
        assert "/eu-west-1/kinesis/aws4_request" in c["headers"]["authorization"]


def test_kinesis_partial_failure_retries_only_the_failed_records():
    def respond(method, path, headers, body):
        ids = [json.loads(base64.b64decode(r["Data"]))["msg_id"] for r in json.loads(body)["Records"]]
        recs = []
        for i, m in enumerate(ids):
            n = int(m.rsplit("-", 1)[1])
            if n % 5 == 0:
                recs.append({"ErrorCode": "ProvisionedThroughputExceededException",
                             "ErrorMessage": "Rate exceeded for shard shardId-0"})
            elif n == 3:
                recs.append({"ErrorCode": "InternalFailure", "ErrorMessage": "Internal service failure."})
            else:
                recs.append({"SequenceNumber": str(i), "ShardId": "shardId-0"})
        out = {"FailedRecordCount": sum("ErrorCode" in r for r in recs), "Records": recs}
        return 200, {"Content-Type": "application/x-amz-json-1.1"}, json.dumps(out).encode()
    with aws_peers.ScriptedPeer(respond, aws_peers.KINESIS_SECRET) as peer:
        status, _, summary, err = run_sink("kinesis", [
            "--count", 20, "--gateway-id", "gw-r", "stream=s", "endpoint=" + peer.endpoint],
            KIN_CREDS, check_rc=1)
    assert len(peer.requests) == 1  # a partial failure is not retried inside the sink
    assert {i for i, s in status.items() if s == "RETRY"} == {3, 5, 10, 15, 20}
    assert summary["ok"] == 15 and summary["poison"] == 0 and summary["failed_calls"] == 0
    assert "5 of 20 records failed" in err


def test_kinesis_oversized_or_garbled_answer_is_a_retry():
    big = b'{"FailedRecordCount":0,"Records":[' + b" " * (2 << 20) + b"]}"
    for body in (big, b"<html>proxy</html>", b'{"FailedRecordCount":0,"Records":[]}'):
        with aws_peers.ScriptedPeer(lambda *a: (200, {}, body), aws_peers.KINESIS_SECRET) as peer:
            _, _, summary, err = run_sink("kinesis", ["--count", 2, "stream=s",
                                                      "endpoint=" + peer.endpoint], KIN_CREDS, check_rc=1)
        assert summary["retry"] == 2 and summary["failed_calls"] == 1, err


def test_kinesis_signature_with_session_token_checks_out():
    with aws_peers.ScriptedPeer(_kinesis_script(set()), aws_peers.KINESIS_SECRET) as peer:
        _, _, summary, _ = run_sink("kinesis", [
            "--count", 3, "stream=s", "endpoint=" + peer.endpoint],
            dict(KIN_CREDS, AWS_SESSION_TOKEN="IQoJb3JpZ2luX2VjE/tok+en="), check_rc=0)
        assert summary["ok"] == 3
        (c,) = peer.requests
        assert c["sig_ok"], c["sig_why"]
        assert c["headers"]["x-amz-security-token"] == "IQoJb3JpZ2luX2VjE/tok+en="
        assert "x-amz-security-token" in c["signed"]
    # Negative control: the checker does refuse a signature made with another secret.
    with aws_peers.ScriptedPeer(_kinesis_script(set()), "not-the-secret") as peer:
        run_sink("kinesis", ["--count", 1, "stream=s", "endpoint=" + peer.endpoint], KIN_CREDS)
        assert not peer.requests[0]["sig_ok"]
        assert "signature mismatch" in peer.requests[0]["sig_why"]


# ---- S3 -----------------------------------------------------------------------------------

def check_objects(objs, rows, gw, prefix):
    """Every object well formed; returns Counter of msg_id over all objects."""
    counts = collections.Counter()
    for o in objs:
        m = KEY_RE.match(o["key"])
        assert m, o["key"]
        assert (m.group("prefix") or "") == prefix
        assert m.group("gw") == gw
        assert o["content_type"] == "application/gzip"
        assert o["etag"] == hashlib.md5(o["body"]).hexdigest()
        assert o["body"][:2] == b"\x1f\x8b"
        ids = []
        for doc in o["lines"]:
            rid = int(doc["msg_id"].rsplit("-", 1)[1])
            ids.append(rid)
            counts[doc["msg_id"]] += 1
            assert doc["table"] == m.group("table") == rows[rid]["table"]
            # The record's UTC hour is the object's partition.
            import datetime
            t = datetime.datetime.fromtimestamp(doc["ts"] / 1000, datetime.timezone.utc)
            assert (t.year, t.month, t.day, t.hour) == tuple(
                int(m.group(x)) for x in ("y", "m", "d", "h")), (o["key"], doc)
        assert min(ids) == int(m.group("first")) and max(ids) == int(m.group("last"))
    return counts


def test_s3_objects_layout_and_exactly_once(s3rver):
    n = 4000
    t0 = 1795624484123  # 2026-11-25T16:34:44Z
    status, rows, summary, err = run_sink("s3", [
        "--count", n, "--gateway-id", "gw-s", "--tables", "telemetry,alerts,aggregates",
        "--created-ms", t0, "--step-ms", 3000,  # 4000 x 3 s spans 4 hours
        "bucket=lake", "prefix=raw/v1", "path_style=true", "flush_bytes=128k",
        "endpoint=" + s3rver.endpoint], S3_CREDS, check_rc=0)
    assert summary["ok"] == n and summary["max_bytes"] == 128 * 1024
    assert summary["max_age_ms"] == 60000
    assert summary["calls"] > 1
    objs = aws_peers.read_s3(s3rver.endpoint, "lake", prefix="raw/v1/")
    counts = check_objects(objs, rows, "gw-s", "raw/v1/")
    assert set(counts) == {"gw-s-%d" % i for i in range(1, n + 1)}
    assert all(c == 1 for c in counts.values())
    hours = {KEY_RE.match(o["key"]).group("h") for o in objs}
    assert hours == {"16", "17", "18", "19"}  # 4000 x 3 s from 16:34:44 ends at 19:54
    assert {KEY_RE.match(o["key"]).group("table") for o in objs} == {"telemetry", "alerts", "aggregates"}


def test_s3_poison_group_does_not_block_the_rest(s3rver):
    long_table = "t" * 1100  # the key would be over S3's 1024-byte limit
    status, rows, summary, err = run_sink("s3", [
        "--count", 30, "--gateway-id", "gw-p", "--tables", "telemetry," + long_table,
        "bucket=lake", "prefix=poison", "path_style=true", "endpoint=" + s3rver.endpoint],
        S3_CREDS, check_rc=0)
    assert summary["poison"] == 15 and summary["ok"] == 15
    assert all((r["status"] == "POISON") == (r["table"] == long_table) for r in rows.values())
    assert "1024" in err
    objs = aws_peers.read_s3(s3rver.endpoint, "lake", prefix="poison/")
    counts = check_objects(objs, rows, "gw-p", "poison/")
    assert set(counts) == {r["msg_id"] for r in rows.values() if r["table"] == "telemetry"}


def test_s3_unknown_access_key_is_retried(s3rver):
    # s3rver checks the key id (not the SigV4 signature itself: see aws_peers.ScriptedPeer).
    _, _, summary, err = run_sink("s3", [
        "--count", 10, "--gateway-id", "gw-b", "bucket=lake", "prefix=badsig", "path_style=true",
        "endpoint=" + s3rver.endpoint],
        {"AWS_ACCESS_KEY_ID": "NOSUCHKEY", "AWS_SECRET_ACCESS_KEY": "S3RVER"}, check_rc=1)
    assert summary["retry"] == 10 and summary["poison"] == 0
    assert "InvalidAccessKeyId" in err
    assert aws_peers.read_s3(s3rver.endpoint, "lake", prefix="badsig/") == []


def test_s3_missing_bucket_is_retried(s3rver):
    _, _, summary, err = run_sink("s3", [
        "--count", 3, "bucket=nosuch", "path_style=true", "endpoint=" + s3rver.endpoint],
        S3_CREDS, check_rc=1)
    assert summary["retry"] == 3 and "NoSuchBucket" in err


def test_s3_put_is_signed_with_md5_and_payload_hash():
    """Against the SigV4-checking scripted peer: the signature over the percent-encoded
    Hive key, the session token, Content-MD5 and x-amz-content-sha256 all check out."""
    def respond(method, path, headers, body):
        return 200, {"ETag": '"%s"' % hashlib.md5(body).hexdigest()}, b""
    with aws_peers.ScriptedPeer(respond, "sekrit", service_is_s3=True) as peer:
        _, rows, summary, _ = run_sink("s3", [
            "--count", 6, "--gateway-id", "gw-t", "--step-ms", 1800 * 1000,
            "--created-ms", 1795624484123, "bucket=lake", "prefix=a b/c", "path_style=true",
            "region=eu-central-1", "endpoint=" + peer.endpoint],
            {"AWS_ACCESS_KEY_ID": "AKIDT", "AWS_SECRET_ACCESS_KEY": "sekrit",
             "AWS_SESSION_TOKEN": "FwoGZXIvYXdzEtoken/with+chars="}, check_rc=0)
    assert summary["ok"] == 6
    paths = sorted(r["path"] for r in peer.requests)
    # 16:34, 17:04, 17:34, 18:04, 18:34, 19:04 -> hours 16, 17, 18, 19
    assert paths == ["/lake/a%%20b/c/telemetry/year%%3D2026/month%%3D11/day%%3D25/hour%%3D%02d/gw-t-%s.json.gz"
                     % (h, ids) for h, ids in ((16, "1-1"), (17, "2-3"), (18, "4-5"), (19, "6-6"))]
    for r in peer.requests:
        h = r["headers"]
        assert r["method"] == "PUT"
        assert r["sig_ok"], r["sig_why"]
        assert "/eu-central-1/s3/aws4_request" in h["authorization"]
        assert {"host", "x-amz-date", "x-amz-content-sha256", "x-amz-security-token"} <= set(r["signed"])
        assert h["content-md5"] == base64.b64encode(hashlib.md5(r["body"]).digest()).decode()
        assert h["x-amz-content-sha256"] == hashlib.sha256(r["body"]).hexdigest()
        assert h["content-type"] == "application/gzip"
        assert "content-encoding" not in h
        lines = gzip.decompress(r["body"]).decode().splitlines()
        assert lines and all(json.loads(x)["table"] == "telemetry" for x in lines)
    # Negative control: the same upload signed with another secret does not check out.
    with aws_peers.ScriptedPeer(respond, "another-secret", service_is_s3=True) as peer:
        run_sink("s3", ["--count", 1, "bucket=lake", "path_style=true", "endpoint=" + peer.endpoint],
                 {"AWS_ACCESS_KEY_ID": "AKIDT", "AWS_SECRET_ACCESS_KEY": "sekrit"})
    assert not peer.requests[0]["sig_ok"]


def test_s3_peer_down_then_back():
    with aws_peers.S3rver(bucket="lake") as s3:
        s3.stop()
        args = ["--count", 40, "--gateway-id", "gw-d", "--step-ms", 1000, "bucket=lake",
                "path_style=true", "timeout=3s", "endpoint=" + s3.endpoint]
        _, _, summary, err = run_sink("s3", args, S3_CREDS, check_rc=1)
        assert summary["retry"] == 40 and summary["failed_calls"] == summary["calls"]
        s3.start()
        _, rows, summary, _ = run_sink("s3", args, S3_CREDS, check_rc=0)
        assert summary["ok"] == 40
        counts = check_objects(aws_peers.read_s3(s3.endpoint, "lake"), rows, "gw-d", "")
        assert counts == {"gw-d-%d" % i: 1 for i in range(1, 41)}
