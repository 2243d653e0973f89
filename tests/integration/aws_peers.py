"""aws_peers — start the upstream test peers (kinesalite, s3rver) on loopback and read
back what reached them with a real AWS client (boto3), never with tidegate's own code.

Each peer runs as a child process on a free 127.0.0.1 port with its log captured in a
temp directory; start() waits for readiness with a deadline (no bare sleeps) and the
context managers always stop the process. stop() followed by start() reuses the same
port and data directory, which is what an uplink-outage test needs (kinesalite is given
a leveldb directory so its streams survive the restart; s3rver keeps its files).

    with Kinesalite() as kin:
        kin.create_stream("tg", shards=4)
        ...  # point the kinesis sink at kin.endpoint
        recs = read_kinesis(kin.endpoint, "tg")
    with S3rver(bucket="lake") as s3:
        ...  # s3 sink: endpoint=s3.endpoint path_style=true, keys S3RVER/S3RVER
        objs = read_s3(s3.endpoint, "lake", prefix="p/")

Requires tests/node_modules (tests/integration/npm-peers.sh) and Debian's python3-boto3.
"""

import contextlib
import gzip
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
NODE_MODULES = os.path.join(TESTS, "node_modules")
REGION = "us-east-1"
# s3rver checks SigV4 against this fixed key pair; kinesalite accepts any.
S3RVER_KEY = "S3RVER"
S3RVER_SECRET = "S3RVER"
KINESIS_KEY = "AKIDTIDEGATETEST"
KINESIS_SECRET = "tidegate-test-secret"
# boto3 must talk to the loopback peers directly, whatever proxy the environment names.
os.environ["NO_PROXY"] = ",".join(x for x in (os.environ.get("NO_PROXY"), "127.0.0.1", "localhost") if x)


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port, proc, deadline_s, log_path):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError("peer exited with %s before listening; log:\n%s"
                               % (proc.returncode, _tail(log_path)))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("peer not listening on 127.0.0.1:%d after %.0fs; log:\n%s"
                       % (port, deadline_s, _tail(log_path)))


def _tail(path, n=4000):
    try:
        with open(path, "rb") as f:
            data = f.read()
        return data[-n:].decode("utf-8", "replace")
    except OSError:
        return "(no log)"


class _Peer:
    """A child process on a fixed loopback port with a log file; restartable."""

    name = "peer"

    def __init__(self, workdir=None, port=None, ready_deadline_s=20.0):
        self._own_dir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix="tg-%s-" % self.name)
        self.port = port or free_port()
        self.ready_deadline_s = ready_deadline_s
        self.proc = None
        self.log_path = os.path.join(self.workdir, "%s.log" % self.name)
        self.starts = 0

    @property
    def endpoint(self):
        return "http://127.0.0.1:%d" % self.port

    def _argv(self):
        raise NotImplementedError

    def _ready(self):
        """Extra readiness check after the port accepts connections."""

    def start(self):
        if self.proc is not None:
            return self
        if not os.path.isdir(NODE_MODULES):
            raise RuntimeError("tests/node_modules missing: run tests/integration/npm-peers.sh")
        self.starts += 1
        log = open(self.log_path, "ab")
        log.write(("--- start %d on port %d\n" % (self.starts, self.port)).encode())
        log.flush()
        try:
            self.proc = subprocess.Popen(self._argv(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=TESTS)
        finally:
            log.close()
        try:
            _wait_port(self.port, self.proc, self.ready_deadline_s, self.log_path)
            self._ready()
        except Exception:
            self.stop()
            raise
        return self

    def stop(self):
        """Stop the process (SIGTERM, then SIGKILL after 5 s). Safe to call twice."""
        p, self.proc = self.proc, None
        if p is None:
            return
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)

    def log(self):
        return _tail(self.log_path, 20000)

    def close(self):
        self.stop()
        if self._own_dir and not os.environ.get("TIDEGATE_KEEP_PEER_DIRS"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        try:
            return self.start()
        except Exception:
            self.close()
            raise

    def __exit__(self, *exc):
        self.close()
        return False


class Kinesalite(_Peer):
    """kinesalite 3.3.3 via tests/integration/peers/kinesalite.js, leveldb in workdir."""

    name = "kinesalite"

    def _argv(self):
        data = os.path.join(self.workdir, "db")
        os.makedirs(data, exist_ok=True)
        return ["node", os.path.join(HERE, "peers", "kinesalite.js"), str(self.port), data]

    def _ready(self):
        end = time.monotonic() + self.ready_deadline_s
        while True:
            try:
                kinesis_client(self.endpoint).list_streams()
                return
            except Exception:
                if time.monotonic() > end:
                    raise
                time.sleep(0.1)

    def create_stream(self, name, shards=1, deadline_s=10.0):
        """Create a stream and wait until it is ACTIVE."""
        k = kinesis_client(self.endpoint)
        k.create_stream(StreamName=name, ShardCount=shards)
        end = time.monotonic() + deadline_s
        while k.describe_stream(StreamName=name)["StreamDescription"]["StreamStatus"] != "ACTIVE":
            if time.monotonic() > end:
                raise RuntimeError("stream %s not ACTIVE after %.0fs" % (name, deadline_s))
            time.sleep(0.05)


class S3rver(_Peer):
    """s3rver 3.7.1 with one bucket, files under workdir/data."""

    name = "s3rver"

    def __init__(self, bucket="tidegate", **kw):
        super().__init__(**kw)
        self.bucket = bucket

    def _argv(self):
        data = os.path.join(self.workdir, "data")
        os.makedirs(data, exist_ok=True)
        return ["node", os.path.join(NODE_MODULES, "s3rver", "bin", "s3rver.js"),
                "--address", "127.0.0.1", "--port", str(self.port), "--directory", data,
                "--configure-bucket", self.bucket, "--no-vhost-buckets"]

    def _ready(self):
        end = time.monotonic() + self.ready_deadline_s
        while True:
            try:
                s3_client(self.endpoint).head_bucket(Bucket=self.bucket)
                return
            except Exception:
                if time.monotonic() > end:
                    raise
                time.sleep(0.1)


def kinesis_client(endpoint):
    import boto3
    return boto3.client("kinesis", endpoint_url=endpoint, region_name=REGION,
                        aws_access_key_id=KINESIS_KEY, aws_secret_access_key=KINESIS_SECRET)


def s3_client(endpoint):
    import boto3
    from botocore.config import Config
    return boto3.client("s3", endpoint_url=endpoint, region_name=REGION,
                        aws_access_key_id=S3RVER_KEY, aws_secret_access_key=S3RVER_SECRET,
                        config=Config(s3={"addressing_style": "path"}))


def read_kinesis(endpoint, stream, quiet_polls=2):
    """Every record in every shard of stream, oldest first per shard, as dicts
    {shard, seq, pkey, data (bytes)}. Reads each shard from TRIM_HORIZON until GetRecords
    comes back empty quiet_polls times in a row while caught up."""
    k = kinesis_client(endpoint)
    shards, token = [], None
    while True:
        r = k.list_shards(NextToken=token) if token else k.list_shards(StreamName=stream)
        shards += r["Shards"]
        token = r.get("NextToken")
        if not token:
            break
    out = []
    for sh in shards:
        it = k.get_shard_iterator(StreamName=stream, ShardId=sh["ShardId"],
                                  ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        empty = 0
        while it and empty < quiet_polls:
            r = k.get_records(ShardIterator=it, Limit=10000)
            for rec in r["Records"]:
                out.append({"shard": sh["ShardId"], "seq": rec["SequenceNumber"],
                            "pkey": rec["PartitionKey"], "data": rec["Data"]})
            empty = empty + 1 if not r["Records"] and r.get("MillisBehindLatest", 0) == 0 else 0
            it = r.get("NextShardIterator")
    return out


def read_s3(endpoint, bucket, prefix=""):
    """Every object under prefix as dicts {key, size, lines (parsed JSON objects),
    raw (decompressed bytes), content_type, etag}. Objects must be gzip NDJSON."""
    s3 = s3_client(endpoint)
    out = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            g = s3.get_object(Bucket=bucket, Key=o["Key"])
            body = g["Body"].read()
            raw = gzip.decompress(body)
            lines = [json.loads(x) for x in raw.split(b"\n") if x]
            if raw and not raw.endswith(b"\n"):
                raise ValueError("object %s does not end with a newline" % o["Key"])
            out.append({"key": o["Key"], "size": len(body), "raw": raw, "lines": lines,
                        "content_type": g.get("ContentType"), "etag": g.get("ETag", "").strip('"'),
                        "body": body})
    return out


@contextlib.contextmanager
def peers(bucket="tidegate", streams=()):
    """Both peers at once: yields (kinesalite, s3rver); streams is [(name, shards)]."""
    with Kinesalite() as kin, S3rver(bucket=bucket) as s3:
        for name, shards in streams:
            kin.create_stream(name, shards)
        yield kin, s3


# ---- a scripted loopback peer that checks SigV4 --------------------------------------------
#
# s3rver 3.7.1 does not verify SigV4 signatures (its authentication middleware says "Signature
# version 4 calculation is unimplemented": it only checks that the access key id exists) and
# kinesalite does not look at them at all. So the signatures libcurl makes are checked here,
# by an independent implementation of the AWS Signature Version 4 rules.

import hashlib as _hashlib
import hmac as _hmac
import http.server as _http_server
import threading as _threading
import urllib.parse as _urlparse


def _sha256_hex(b):
    return _hashlib.sha256(b).hexdigest()


def sigv4_verify(method, raw_path, headers, body, secret, service_is_s3):
    """Check the Authorization header of one request. headers: dict with lower-case names.
    Returns (ok, reason, signed_header_names)."""
    auth = headers.get("authorization", "")
    if not auth.startswith("AWS4-HMAC-SHA256 "):
        return False, "no AWS4-HMAC-SHA256 authorization", []
    parts = dict(p.strip().split("=", 1) for p in auth[len("AWS4-HMAC-SHA256 "):].split(","))
    cred = parts["Credential"].split("/")
    _key, date, region, service, term = cred
    signed = parts["SignedHeaders"].split(";")
    amzdate = headers.get("x-amz-date", "")
    if not amzdate.startswith(date) or term != "aws4_request":
        return False, "bad credential scope %r / date %r" % (parts["Credential"], amzdate), signed
    path, _, query = raw_path.partition("?")
    if service_is_s3:
        # S3: each segment of the decoded key URI-encoded once.
        uri = "/".join(_urlparse.quote(_urlparse.unquote(s), safe="-_.~") for s in path.split("/"))
    else:
        # Other services: the (already encoded) path is encoded a second time.
        uri = "/".join(_urlparse.quote(_urlparse.quote(_urlparse.unquote(s), safe="-_.~"), safe="-_.~")
                       for s in path.split("/"))
    q = sorted(_urlparse.parse_qsl(query, keep_blank_values=True))
    cq = "&".join("%s=%s" % (_urlparse.quote(k, safe="-_.~"), _urlparse.quote(v, safe="-_.~")) for k, v in q)
    ch = "".join("%s:%s\n" % (h, " ".join(headers.get(h, "").split())) for h in signed)
    payload = headers.get("x-amz-content-sha256") or _sha256_hex(body)
    creq = "\n".join([method, uri, cq, ch, ";".join(signed), payload])
    scope = "/".join([date, region, service, "aws4_request"])
    sts = "\n".join(["AWS4-HMAC-SHA256", amzdate, scope, _sha256_hex(creq.encode())])
    k = ("AWS4" + secret).encode()
    for m in (date, region, service, "aws4_request"):
        k = _hmac.new(k, m.encode(), _hashlib.sha256).digest()
    want = _hmac.new(k, sts.encode(), _hashlib.sha256).hexdigest()
    if not _hmac.compare_digest(want, parts["Signature"]):
        return False, "signature mismatch; canonical request:\n" + creq, signed
    if payload != _sha256_hex(body):
        return False, "x-amz-content-sha256 is not the body's hash", signed
    return True, "", signed


class ScriptedPeer:
    """A loopback HTTP server answering with respond(method, path, headers, body) ->
    (status, headers dict, body bytes), recording every request (with its SigV4 check
    against secret) in .requests. Context manager; always shut down."""

    def __init__(self, respond, secret, service_is_s3=False):
        self.respond = respond
        self.secret = secret
        self.service_is_s3 = service_is_s3
        self.requests = []
        peer = self

        class Handler(_http_server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like the real services

            def _serve(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n) if n else b""
                hdrs = {k.lower(): v for k, v in self.headers.items()}
                ok, why, signed = sigv4_verify(self.command, self.path, hdrs, body, peer.secret,
                                               peer.service_is_s3)
                peer.requests.append({"method": self.command, "path": self.path, "headers": hdrs,
                                      "body": body, "sig_ok": ok, "sig_why": why,
                                      "signed": signed, "client": self.client_address})
                status, rh, rb = peer.respond(self.command, self.path, hdrs, body)
                self.send_response(status)
                for k, v in rh.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(rb)))
                self.end_headers()
                self.wfile.write(rb)

            do_POST = do_PUT = _serve

            def log_message(self, *a):
                pass

        self.server = _http_server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = _threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self):
        return "http://127.0.0.1:%d" % self.server.server_address[1]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
        return False
