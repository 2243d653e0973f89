"""The shipped docs and configs stay true to the code."""
import subprocess

import harness


def test_config_reference_is_current():
    out = subprocess.run([harness.BUILD / "tidegate", "config-reference"], capture_output=True, text=True, check=True)
    doc = (harness.REPO / "docs" / "config-reference.md").read_text()
    assert out.stdout == doc, "docs/config-reference.md is stale: run `build/rel/tidegate config-reference > docs/config-reference.md`"


def test_shipped_config_is_valid(tmp_path, certs):
    # check-config reads the files the config names: map the installed paths to real ones
    text = harness.installed_paths((harness.REPO / "packaging" / "etc" / "tidegate.conf").read_text(), certs, tmp_path)
    r = subprocess.run([harness.BUILD / "tidegate", "check-config", "-c", "/dev/stdin"], input=text,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "key_file = <redacted>" in r.stdout


def test_bad_config_names_file_line_col(tmp_path):
    p = tmp_path / "bad.conf"
    p.write_text("gateway_id = x\n[broker]\ntls = false\nport = seven\n")
    r = subprocess.run([harness.BUILD / "tidegate", "run", "-c", p], capture_output=True, text=True)
    assert r.returncode == 2
    assert f"{p}:4:8: option 'port'" in r.stderr


# ---- every command the README and docs show (issue 12 item 17) -------------------------------
# Commands are the lines of ```sh blocks and the "$ " lines of plain blocks (the lines after
# one, up to the next, are its output). Each is run as written, from a sandbox that looks
# like the repository (certs/ scripts, rules/, packaging/, build/rel/ = the build under test)
# and with the paths it would write outside the sandbox moved into it: /var/lib/tidegate/,
# /tmp/, and the fixed broker port 18883 (a free port instead). Commands that cannot run
# here say why below; a command that no rule knows fails the test, so a new example in the
# docs gets checked or explicitly set aside.
import os  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402

DOCS = ["docs/device_sim.md", "README.md", "docs/registry.md", "docs/rules-reference.md", "docs/schemas.md",
        "docs/config-reference.md"]  # in the order they run: device_sim.md makes the certificates

SKIP = [
    (r"^make (demo|check)\b", "runs the whole suite or the demo (tests/integration/test_demo.py runs the demo)"),
    (r"bench_", "a benchmark: speed is measured by `make bench`, never in the tests"),
    (r"^make build/", "builds: `make check` has built everything before this test runs"),
    (r"^make fuzz-replay$", "part of `make check` itself"),
    (r"^kill -HUP \$\(pidof tidegate\)", "signals a running daemon (tests/integration/test_rules_live.py reloads)"),
    (r" -c /etc/tidegate/", "reads an installed configuration (test_rules_cli.py runs `rules check -c` on a real one)"),
    (r"--shadow\b", "device_sim's shadow mode needs a daemon serving shadows (test_shadow.py::test_device_sim_shadow_mode)"),
    (r"^tidegate shadow ", "asks a running daemon (test_shadow.py::test_cli runs get/update/delete/list)"),
    (r"^make deb\b", "builds the packages: `make check-packaging` builds and tests both (tests/packaging)"),
    (r"^sudo ", "the install on a box, as root: tests/packaging/test_deb.py::TestCleanRoot::"
                "test_readme_install_section_word_for_word runs these lines in a clean Debian 12 root"),
]
RUN = r"^(certs/[a-z-]+\.sh |tidegate |build/rel/device_sim |mosquitto -c )"


def strip_comment(cmd):
    """Drop a trailing `# comment` (a # after whitespace, outside quotes)."""
    q = None
    for i, ch in enumerate(cmd):
        if q:
            q = None if ch == q else q
        elif ch in "'\"":
            q = ch
        elif ch == "#" and (i == 0 or cmd[i - 1].isspace()):
            return cmd[:i].rstrip()
    return cmd.rstrip()


def expected_re(lines):
    """The documented output as a pattern: a certificate fingerprint, whole or elided
    (5fdc7638…0af7, 5fdc7638d6ecb47c...), stands for whatever fingerprint this run made."""
    pats = []
    for ln in lines:
        ln = re.sub(r"[0-9a-f]*(?:…|\.\.\.)[0-9a-f]*|\b[0-9a-f]{16,}\b", "\0", ln.strip())
        pats.append(re.escape(ln).replace("\0", "[0-9a-f.…]+"))
    return re.compile("\n".join(pats))


def sandbox(tmp_path):
    box = tmp_path / "box"
    (box / "certs").mkdir(parents=True)
    for f in (harness.REPO / "certs").iterdir():
        if f.is_file():
            (box / "certs" / f.name).symlink_to(f)
    (box / "rules").symlink_to(harness.REPO / "rules")
    (box / "packaging").symlink_to(harness.REPO / "packaging")
    (box / "build").mkdir()
    (box / "build" / "rel").symlink_to(harness.BUILD)
    (box / "bin").mkdir()
    (box / "bin" / "tidegate").symlink_to(harness.BUILD / "tidegate")
    (box / "var").mkdir()
    (box / "tmp").mkdir()
    return box


def test_documented_commands_run(tmp_path):
    box = sandbox(tmp_path)
    port = str(harness.free_port())
    env = dict(os.environ, PATH=f"{box / 'bin'}:{os.environ['PATH']}", TIDEGATE_REGISTRY=str(box / "var/registry.db"),
               TIDEGATE_CERTS=str(box / "certs"))
    cmds = []
    for doc in DOCS:
        text = (harness.REPO / doc).read_text()
        for line, cmd, expected in _commands_of(text):
            cmds.append((doc, line, cmd, expected))
    assert len(cmds) >= 20, cmds
    servers, ran, skipped = [], [], []
    try:
        for doc, line, cmd, expected in cmds:
            where = f"{doc}:{line}: {cmd}"
            reason = next((why for pat, why in SKIP if re.search(pat, cmd)), None)
            if reason:
                skipped.append((where, reason))
                continue
            assert re.search(RUN, cmd), f"{where}: a documented command this test does not know; run or skip it here"
            moved = {"/var/lib/tidegate/": f"{box / 'var'}/", "/tmp/": f"{box / 'tmp'}/", "18883": port}
            real = re.sub(r"(?<![\w/])(/var/lib/tidegate/|/tmp/|18883\b)", lambda m: moved[m.group(1)], cmd)
            if cmd.startswith("mosquitto -c "):  # a server: started, waited for, stopped at the end
                servers.append(harness.Proc(["bash", "-c", "exec " + real], box / f"server-{line}.log", env=env,
                                            cwd=box))
                harness.wait_until(lambda: harness.port_open(int(port)) or not servers[-1].alive(), 10,
                                   what=f"{where} listening")
                assert servers[-1].alive(), servers[-1].text()
                ran.append(where)
                continue
            r = subprocess.run(["bash", "-c", real], cwd=box, env=env, capture_output=True, text=True, timeout=120)
            got = (r.stdout + r.stderr).strip()
            if expected is not None:  # "$ cmd" with its output shown: the output must be what the doc says
                assert expected_re(expected).fullmatch(got), f"{where}\ndoc says:\n{chr(10).join(expected)}\ngot:\n{got}"
            else:
                assert r.returncode == 0, f"{where}: exit {r.returncode}\n{got}"
            ran.append(where)
    finally:
        for s in servers:
            s.stop(signal.SIGTERM)
    print(f"{len(ran)} documented commands ran, {len(skipped)} set aside:")
    for where, why in skipped:
        print(f"  {where}  -- {why}")
    assert len(ran) >= 15


def _commands_of(text):
    """(line, command, expected output lines or None) of one markdown text."""
    out = []
    for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M):
        lang, lines = m.group(1), m.group(2).split("\n")
        if lang not in ("sh", "bash", ""):
            continue
        first = text[:m.start()].count("\n") + 2
        cur = None
        for k, ln in enumerate(lines):
            if cur is not None and cur["cont"]:
                cur["cmd"] += " " + ln.strip()
            elif lang != "" and ln.strip():
                cur = {"line": first + k, "cmd": ln.strip(), "out": None}
                out.append(cur)
            elif lang == "" and ln.startswith("$ "):
                cur = {"line": first + k, "cmd": ln[2:].strip(), "out": []}
                out.append(cur)
            elif lang == "" and cur is not None and ln.strip():
                cur["out"].append(ln)
                continue
            else:
                continue
            cur["cont"] = cur["cmd"].endswith("\\")
            if cur["cont"]:
                cur["cmd"] = cur["cmd"][:-1].rstrip()
    return [(c["line"], strip_comment(c["cmd"]), c["out"]) for c in out]
