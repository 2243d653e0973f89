"""A daemon with the operator's console on (token file, rules folder, page folder), and a
small HTTP client for its API. Shared by test_console.py and test_console_browser.py."""
import json
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request

import harness

NO_TOKEN = object()


class Console:
    def __init__(self, broker, daemons, tmp_path, rules=("hot-alerts.json", "high-temperature-alert.json"),
                 http_extra="", extra="", sinks=None, start=True, tls=None):
        self.tmp = tmp_path
        self.token_file = tmp_path / "api-token"
        subprocess.run([harness.BUILD / "tidegate", "token", "new", self.token_file], check=True,
                       capture_output=True)
        self.token = self.token_file.read_text().strip()
        self.rules_dir = tmp_path / "rules"
        self.rules_dir.mkdir(exist_ok=True)
        for n in rules:
            shutil.copy(harness.REPO / "rules" / n, self.rules_dir / n)
        self.tls = tls  # (cert, key, ca) or None
        tls_lines = f"tls_cert_file = {tls[0]}\ntls_key_file = {tls[1]}\n" if tls else ""
        self.d = daemons(broker, start=False, sinks=sinks,
                         extra=f"token_file = {self.token_file}\nwww_dir = {harness.REPO / 'gateway' / 'ops' / 'www'}\n"
                               f"{tls_lines}{http_extra}\n[ingest]\nrules_dir = {self.rules_dir}\n{extra}")
        self.d.token = self.token
        if start and not tls:
            self.d.start()

    @property
    def base(self):
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.d.http_port}"

    def call(self, method, path, body=None, token=NO_TOKEN, headers=None, timeout=10, raw=False):
        """(status, parsed JSON body or text, response headers)"""
        data = body if isinstance(body, (bytes, type(None))) else (
            body.encode() if isinstance(body, str) else json.dumps(body).encode())
        req = urllib.request.Request(self.base + path, data=data, method=method)
        tok = self.token if token is NO_TOKEN else token
        if tok is not None:
            req.add_header("Authorization", f"Bearer {tok}")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        ctx = None
        if self.tls:
            ctx = ssl.create_default_context(cafile=str(self.tls[2]))
            ctx.check_hostname = False
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=ctx) as r:
                status, text, hdrs = r.status, r.read(), dict(r.headers)
        except urllib.error.HTTPError as e:
            status, text, hdrs = e.code, e.read(), dict(e.headers)
        if raw:
            return status, text, hdrs
        text = text.decode(errors="replace")
        try:
            return status, json.loads(text), hdrs
        except ValueError:
            return status, text, hdrs

    def get(self, path, **kw):
        return self.call("GET", path, **kw)
