"""Issue 13 — the Debian packages: what they hold, lintian, and the amd64 package's life in
a clean Debian 12 root (install with apt, run, reinstall, upgrade, remove, purge).

The root is made by mmdebstrap from the Debian archive and cached (debroot.py); each test
session unpacks a fresh copy. The tests in TestCleanRoot run in order on one root: each
step is what an operator does next.
"""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import debroot
from conftest import REPO, VERSION, deb_path

TRIPLETS = {"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}
ELF_MACHINE = {"amd64": "Advanced Micro Devices X86-64", "arm64": "AArch64"}
CONF = "/etc/tidegate/tidegate.conf"


def deb_files(deb):
    out = subprocess.run(["dpkg-deb", "-c", str(deb)], check=True, capture_output=True, text=True).stdout
    return {line.split()[-1].lstrip(".") for line in out.splitlines() if not line.startswith("d")}


def deb_control_file(deb, name):
    return subprocess.run(["dpkg-deb", "--info", str(deb), name], check=True, capture_output=True,
                          text=True).stdout


def extract(deb, dest):
    subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True)
    return Path(dest)


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_package_contents_and_metadata(arch, tmp_path):
    deb = deb_path(arch)
    assert debroot.deb_field(deb, "Version") == VERSION
    assert debroot.deb_field(deb, "Architecture") == arch
    files = deb_files(deb)
    want = {"/usr/bin/tidegate", "/usr/bin/tidegate-device-sim",
            f"/usr/lib/{TRIPLETS[arch]}/tidegate/tidegate_auth.so", "/lib/systemd/system/tidegate.service",
            "/lib/systemd/system/mosquitto.service.d/tidegate.conf",  # the broker's open-file limit
            CONF, "/etc/tidegate/rules/hot-alerts.json", "/etc/tidegate/rules/schemas/50-telemetry.json",
            "/etc/tidegate/rules/aggregates/aggregates.json", "/etc/mosquitto/conf.d/tidegate.conf",
            "/usr/share/man/man1/tidegate.1.gz", "/usr/share/man/man1/tidegate-device-sim.1.gz",
            "/usr/share/doc/tidegate/changelog.gz", "/usr/share/doc/tidegate/copyright",
            "/usr/share/doc/tidegate/README.md"}
    assert want <= files, sorted(want - files)
    # every file under /etc is a conffile, and nothing else is
    conffiles = set(deb_control_file(deb, "conffiles").split())
    assert conffiles == {f for f in files if f.startswith("/etc/")}
    # the binaries are for this architecture
    root = extract(deb, tmp_path / "x")
    for b in ("usr/bin/tidegate", "usr/bin/tidegate-device-sim",
              f"usr/lib/{TRIPLETS[arch]}/tidegate/tidegate_auth.so"):
        hdr = subprocess.run(["readelf", "-h", str(root / b)], check=True, capture_output=True, text=True).stdout
        assert ELF_MACHINE[arch] in hdr, (b, hdr)
    # Depends was computed from the binaries: the package of every library they need is in it
    depends = {d.split()[0] for d in debroot.deb_field(deb, "Depends").split(", ")}
    needed = set()
    for b in ("usr/bin/tidegate", "usr/bin/tidegate-device-sim"):
        dyn = subprocess.run(["readelf", "-d", str(root / b)], check=True, capture_output=True, text=True).stdout
        needed |= set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dyn))
    assert "libsystemd.so.0" in needed and "libmosquitto.so.1" in needed, needed
    paths = [f"/usr/lib/{TRIPLETS[arch]}/{so}" for so in needed] + [f"/lib/{TRIPLETS[arch]}/{so}" for so in needed]
    owners = subprocess.run(["dpkg-query", "-S", *paths], capture_output=True, text=True).stdout
    pkg_of = {line.rsplit("/", 1)[1]: line.split(":")[0] for line in owners.splitlines()}
    for soname in needed:
        assert pkg_of.get(soname) in depends, f"{soname} ({pkg_of.get(soname)}) missing from Depends: {sorted(depends)}"
    # libcurl is loaded at run time by the HTTP sinks, so it cannot be computed: recommended
    assert "libcurl4" in debroot.deb_field(deb, "Recommends")


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_lintian_clean(arch):
    """Every lintian tag, pedantic and informational included, is fixed or overridden with
    a reason (packaging/debian/lintian-overrides); an unused override would show too."""
    r = subprocess.run(["lintian", "--pedantic", "--display-info", "--display-experimental", "--fail-on", "none",
                        "--tag-display-limit", "0", str(deb_path(arch))], capture_output=True, text=True,
                       timeout=600)
    tags = [line for line in (r.stdout + r.stderr).splitlines()
            if line.strip() and "running with root privileges" not in line]
    assert r.returncode == 0 and tags == [], "\n".join(tags)


def test_version_from_one_place():
    """`tidegate version` prints the changelog's version, the package's."""
    build = Path(os.environ.get("TIDEGATE_BUILD", REPO / "build" / "rel"))
    out = subprocess.run([build / "tidegate", "version"], check=True, capture_output=True, text=True).stdout
    assert out.strip() == f"tidegate {VERSION}"
    assert debroot.deb_field(deb_path("amd64"), "Version") == VERSION


def test_man_page_synopsis_matches_help():
    build = Path(os.environ.get("TIDEGATE_BUILD", REPO / "build" / "rel"))
    usage = subprocess.run([build / "tidegate", "--help"], check=True, capture_output=True, text=True).stdout
    help_lines = [re.sub(r"^(usage:)?\s+", "", line) for line in usage.splitlines() if line.strip()]
    man = (REPO / "packaging/man/tidegate.1").read_text()
    synopsis = man.split(".SH SYNOPSIS", 1)[1].split(".SH", 1)[0]
    man_lines = [line.replace("\\-", "-") for line in synopsis.splitlines() if line and not line.startswith(".")]
    assert man_lines == help_lines


def _unit_line(root, key):
    text = root.file("/lib/systemd/system/tidegate.service").read_text()
    m = re.search(rf"^{key}=(.*)$", text, re.M)
    assert m, f"{key}= missing from the unit"
    return m.group(1).split()


@pytest.fixture(scope="class")
def root():
    r = debroot.Root(deb_path("amd64"))
    yield r
    r.destroy()


class TestCleanRoot:
    """One clean Debian 12 root, the amd64 package's whole life in it, step by step."""

    def test_apt_installs_with_dependencies(self, root):
        assert root.installed("tidegate") is None
        assert root.installed("libmosquitto1") is None, "the root is not clean"
        deb = root.copy_in(deb_path("amd64"))
        r = root.run("apt-get", "install", "-y", "-q", deb, check=True)
        assert root.installed("tidegate") == VERSION
        # apt resolved and installed what the package depends on and recommends
        for dep in ("libmosquitto1", "libsystemd0", "libsqlite3-0", "libmicrohttpd12", "adduser", "mosquitto",
                    "libcurl4"):
            assert root.installed(dep), (dep, r.stdout[-2000:])
        # from the cache: nothing was downloaded
        assert "http" not in "".join(line for line in r.stdout.splitlines() if line.startswith("Get:")), r.stdout
        # installed, not enabled: it needs certificates first
        assert root.run("systemctl", "is-enabled", "tidegate.service").stdout.strip() == "disabled"

    def test_commands_in_packaged_layout(self, root):
        assert root.run("tidegate", "version", check=True).stdout.strip() == f"tidegate {VERSION}"
        # as installed, before the operator puts certificates in: the configuration is
        # refused for exactly that, with file:line:col (so the unit will not start)
        self._assert_only_certs_missing(root)
        r = root.run("tidegate", "rules", "check", "/etc/tidegate/rules", check=True)
        assert "rules OK" in r.stdout
        assert root.run("tidegate-device-sim", "--help").returncode in (0, 2)
        assert root.file(f"/usr/lib/{TRIPLETS['amd64']}/tidegate/tidegate_auth.so").exists()

    def test_user_and_data_dir(self, root):
        pw = root.run("getent", "passwd", "tidegate", check=True).stdout.strip().split(":")
        name, _, uid, gid, _, home, shell = pw
        assert int(uid) < 1000 and home == "/var/lib/tidegate" and shell == "/usr/sbin/nologin", pw
        grp = root.run("getent", "group", "tidegate", check=True).stdout.split(":")
        assert grp[2] == gid
        st = os.stat(root.file("/var/lib/tidegate"))
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (int(uid), int(gid), 0o750)

    def test_readme_install_section_word_for_word(self, root):
        """The README's commands for the box, run as written in the root (its own network
        namespace). `apt install` was the first test; where systemd is absent, `systemctl
        restart X` / `enable --now X` run what unit X runs: its ExecStartPre= and ExecStart=
        lines, as its User=. Then the README's "try it" sends 30 readings: all in the lake."""
        readme = (REPO / "README.md").read_text()
        box = readme.split("On the box, install, point it at certificates, start:", 1)[1]
        install = box.split("```sh\n", 1)[1].split("```", 1)[0].splitlines()
        tryit = box.split("Try it:", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0].splitlines()
        assert install[0].startswith("sudo apt install ./tidegate_") and tryit, "README layout changed"
        script = ["set -e"]
        for line in install[1:] + ["@wait"] + tryit:
            m = re.match(r"sudo systemctl (?:restart|enable --now) (\S+)$", line)
            if m:
                if m.group(1) == "tidegate":
                    script.append("systemctl enable tidegate")
                script += self._unit_commands(root, m.group(1))
            elif line == "@wait":
                # until the daemon is connected to the broker (its /metrics says so)
                script.append("for i in $(seq 200); do exec 3<>/dev/tcp/127.0.0.1/9100 2>/dev/null && "
                              "{ printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3; "
                              "grep -q '^tidegate_broker_connected 1' <&3 && break; }; sleep 0.1; done")
            else:
                assert line.startswith("sudo "), line
                script.append(line[len("sudo "):])
        # a clean stop closes the lake files; then count what landed
        script += ["kill $TG; wait $TG || true", "kill $(cat /run/mosquitto/mosquitto.pid) || true",
                   "echo LAKE=$(find /var/lib/tidegate/lake/telemetry -name '*.json.gz' -exec zcat {} + | wc -l)"]
        (root.file("/tmp/readme.sh")).write_text("\n".join(script) + "\n")
        r = root.run("bash", "/tmp/readme.sh", net=True, timeout=180)
        assert r.returncode == 0 and "LAKE=30" in r.stdout, r.stdout[-4000:] + r.stderr[-4000:]
        assert root.run("systemctl", "is-enabled", "tidegate.service").stdout.strip() == "enabled"

    @staticmethod
    def _unit_commands(root, unit):
        text = root.file(f"/lib/systemd/system/{unit}.service").read_text()
        user = re.search(r"^User=(\S+)$", text, re.M)
        run = f"runuser -u {user.group(1)} -- " if user else ""
        out = [("" if c.startswith(("/bin/mkdir", "/bin/chown")) else run) + c.lstrip("-+!")
               for c in re.findall(r"^ExecStartPre=(.*)$", text, re.M)]
        start = re.search(r"^ExecStart=(.*)$", text, re.M).group(1)
        var = "TG" if unit == "tidegate" else "MQ"
        # in the background; mosquitto is ready once its port is open
        out.append(f"{run}{start} >/tmp/{unit}.log 2>&1 & {var}=$!")
        if unit == "mosquitto":
            out.append("for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/8883) 2>/dev/null && break; sleep 0.1; done")
        return out

    def test_unit_verifies(self, root):
        # inside the root, where the unit and the binaries it names are installed (the
        # root has no man-db, so the man: link is checked by test_man_page_* instead)
        r = root.run("systemd-analyze", "verify", "--man=no", "tidegate.service")
        assert r.returncode == 0 and r.stdout + r.stderr == "", r.stdout + r.stderr
        assert _unit_line(root, "Type") == ["notify"]
        assert _unit_line(root, "WatchdogSec")
        assert _unit_line(root, "ExecReload") == ["/bin/kill", "-HUP", "$MAINPID"]
        for key, want in (("ProtectSystem", "strict"), ("NoNewPrivileges", "yes"), ("User", "tidegate"),
                          ("StateDirectory", "tidegate")):
            assert _unit_line(root, key) == [want]

    def test_broken_config_fails_in_execstartpre(self, root):
        """systemd runs ExecStartPre as User=tidegate: the same command, as that user, on
        a broken file, exits non-zero with file:line:col on stderr (the journal)."""
        good = root.file(CONF).read_text()
        try:
            lines = good.splitlines()
            lines.insert(3, "gatway_id = typo")  # line 4, column 1
            root.file(CONF).write_text("\n".join(lines) + "\n")
            pre = _unit_line(root, "ExecStartPre")
            r = root.run(*pre, user="tidegate")
            assert r.returncode != 0
            assert f"{CONF}:4:1" in r.stderr, r.stderr
            assert "gatway_id" in r.stderr
        finally:
            root.file(CONF).write_text(good)
        assert root.run(*_unit_line(root, "ExecStartPre"), user="tidegate").returncode == 0

    @staticmethod
    def _assert_only_certs_missing(root):
        r = root.run("tidegate", "check-config", "-c", CONF, user="tidegate")
        errors = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(errors) == 3, r.stderr
        for e, key in zip(errors, ("ca_file", "cert_file", "key_file")):
            assert re.match(rf"{CONF}:\d+:\d+: \[broker\] {key}: cannot read /etc/tidegate/certs/", e), e

    def test_check_config_passes_with_certificates(self, root):
        """After the README's steps the shipped configuration passes, as the daemon's user."""
        r = root.run("tidegate", "check-config", "-c", CONF, user="tidegate", check=True)
        assert "gateway_id = gw-01" in r.stdout and "key_file = <redacted>" in r.stdout
        r = root.run("tidegate", "rules", "check", "-c", CONF, user="tidegate", check=True)
        assert "rules OK" in r.stdout

    def _edit_conffiles(self, root):
        conf = root.file(CONF)
        conf.write_text(conf.read_text().replace("gateway_id = gw-01", "gateway_id = site-7") + "# operator edit\n")
        rule = root.file("/etc/tidegate/rules/hot-alerts.json")
        rule.write_text(rule.read_text().replace("temperature > 28", "temperature > 31"))

    def _assert_edits_kept(self, root):
        assert "gateway_id = site-7" in root.file(CONF).read_text()
        assert "# operator edit" in root.file(CONF).read_text()
        assert "temperature > 31" in root.file("/etc/tidegate/rules/hot-alerts.json").read_text()

    def test_conffile_edits_survive_reinstall_and_upgrade(self, root, tmp_path):
        self._edit_conffiles(root)
        root.run("systemctl", "enable", "tidegate.service", check=True)  # the operator's choice
        root.file("/var/lib/tidegate/outbox.db").write_bytes(b"data the operator keeps")
        deb = root.copy_in(deb_path("amd64"))
        root.run("apt-get", "install", "-y", "-q", "--reinstall", deb, check=True)
        self._assert_edits_kept(root)
        # a real upgrade: the same package as a newer version (dpkg compares conffiles'
        # checksums; an edited one whose shipped version did not change is kept, no prompt)
        work = tmp_path / "up"
        subprocess.run(["dpkg-deb", "-R", str(deb_path("amd64")), str(work)], check=True)
        ctl = work / "DEBIAN" / "control"
        ctl.write_text(ctl.read_text().replace(f"Version: {VERSION}\n", f"Version: {VERSION}+test1\n"))
        newer = tmp_path / f"tidegate_{VERSION}+test1_amd64.deb"
        subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(work), str(newer)], check=True,
                       capture_output=True)
        r = root.run("apt-get", "install", "-y", "-q", root.copy_in(newer), check=True)
        assert root.installed("tidegate") == f"{VERSION}+test1", r.stdout
        self._assert_edits_kept(root)
        assert root.file("/var/lib/tidegate/outbox.db").read_bytes() == b"data the operator keeps"
        st = os.stat(root.file("/var/lib/tidegate"))
        assert st.st_mode & 0o7777 == 0o750
        assert root.run("systemctl", "is-enabled", "tidegate.service").stdout.strip() == "enabled"

    def test_remove_keeps_purge_removes(self, root):
        root.run("apt-get", "remove", "-y", "-q", "tidegate", check=True)
        assert root.installed("tidegate") is None
        assert not root.file("/usr/bin/tidegate").exists()
        self._assert_edits_kept(root)
        assert root.file("/var/lib/tidegate/outbox.db").exists(), "remove deleted data"
        root.run("apt-get", "purge", "-y", "-q", "tidegate", check=True)
        for p in ("/etc/tidegate", "/var/lib/tidegate", "/etc/mosquitto/conf.d/tidegate.conf"):
            assert not root.file(p).exists(), f"{p} left after purge"
        # the system user stays (Debian keeps system users: no recycled uid owns old files)
        assert root.run("getent", "passwd", "tidegate").returncode == 0

    def test_reinstall_after_purge(self, root):
        deb = root.copy_in(deb_path("amd64"))
        root.run("apt-get", "install", "-y", "-q", deb, check=True)
        assert "gateway_id = gw-01" in root.file(CONF).read_text()
        st = os.stat(root.file("/var/lib/tidegate"))
        assert st.st_mode & 0o7777 == 0o750
        self._assert_only_certs_missing(root)  # purge took the certificates with /etc/tidegate


def test_make_install_matches_the_package(tmp_path):
    """`make install` puts the same files where the package does (the package is made from it)."""
    dest = tmp_path / "dest"
    subprocess.run(["make", "-s", "--no-print-directory", "install", f"DESTDIR={dest}", "PREFIX=/usr"], cwd=REPO,
                   check=True, capture_output=True)
    installed = {"/" + str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()}
    packaged = {f for f in deb_files(deb_path(subprocess.run(["dpkg", "--print-architecture"], capture_output=True,
                                                             text=True).stdout.strip()))}
    # the package adds Debian's own: copyright, changelog, lintian overrides
    debian_only = {"/usr/share/doc/tidegate/copyright", "/usr/share/doc/tidegate/changelog.gz",
                   "/usr/share/lintian/overrides/tidegate"}
    assert installed == packaged - debian_only
    shutil.rmtree(dest)
