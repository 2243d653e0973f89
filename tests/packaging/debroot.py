"""A clean Debian 12 root for package tests: made by mmdebstrap from the Debian archive,
cached, unpacked afresh for each test session, and entered with chroot.

The cache is a tarball of a `--variant=apt` bookworm root whose apt lists are kept, and
beside it a folder of the .debs the package under test will pull in (Depends and
Recommends, fetched once with `apt-get install --download-only` of that very package
inside such a root), copied into each fresh root's apt cache. So a
test's `apt-get install ./tidegate_*.deb` resolves the dependencies with apt for real, in
a root that has none of them installed, without touching the network. The tarball's name
carries a hash of what decides its content (suite, variant, the package's dependency
fields, the apt sources), so a new dependency makes a new root; a cold build takes about
a minute, a warm start a few seconds.

The apt sources are the host's own (its sources file is handed to mmdebstrap), so the
root sees the same archive and versions as the machine that built the package.
"""
import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

SUITE = "bookworm"
VARIANT = "apt"
# What every Debian 12 box the package targets has besides the minimal root: systemd as
# init (so the unit can be verified where it is installed), procps (/bin/kill, which the
# unit's ExecReload uses; Priority: important) and ca-certificates (on every installed
# system; configuring it costs half a minute of openssl runs, better spent once here).
INCLUDE = ["systemd", "procps", "ca-certificates"]
CACHE = Path(os.environ.get("TIDEGATE_TEST_CACHE", "/var/cache/tidegate-test"))
HOST_SOURCES = [Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")]


def _sources():
    for p in HOST_SOURCES:
        if p.exists() and p.read_text().strip():
            return p
    raise RuntimeError("no Debian apt sources on this machine (looked for %s)" % HOST_SOURCES)


def deb_field(deb, field):
    return subprocess.run(["dpkg-deb", "-f", str(deb), field], check=True, capture_output=True,
                          text=True).stdout.strip()


def cache_key(deb):
    h = hashlib.sha256()
    for part in (SUITE, VARIANT, ",".join(INCLUDE), deb_field(deb, "Architecture"), deb_field(deb, "Depends"),
                 deb_field(deb, "Recommends"), _sources().read_text()):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:16]


def cached_tarball(deb):
    """The cached root tarball for this package's dependencies, built if missing, and the
    folder of the .debs apt will want for them."""
    CACHE.mkdir(parents=True, exist_ok=True)
    key = cache_key(deb)
    tar = CACHE / f"bookworm-{VARIANT}-{key}.tar"
    debs = CACHE / f"archives-{key}"
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs at once build it once
        if tar.exists() and debs.is_dir():
            return tar, debs
        tmp = tar.with_name(tar.stem + ".part.tar")
        argv = ["mmdebstrap", "--quiet", f"--variant={VARIANT}", "--mode=root", "--format=tar",
                "--skip=cleanup/apt/lists", "--include=" + ",".join(INCLUDE),
                # a throw-away root: dpkg need not fsync every file
                "--dpkgopt=force-unsafe-io",
                SUITE, str(tmp), str(_sources())]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise RuntimeError(f"mmdebstrap failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        # what apt will fetch for the package, fetched once from inside such a root
        root = _unpack(tmp)
        try:
            name = Path(deb).name
            shutil.copy(deb, root / "tmp" / name)
            r = chroot_run(root, ["apt-get", "install", "-y", "-q", "--download-only", f"/tmp/{name}"], timeout=600)
            if r.returncode != 0:
                raise RuntimeError(f"downloading the dependencies failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
            part = debs.with_name(debs.name + ".part")
            shutil.rmtree(part, ignore_errors=True)
            part.mkdir()
            for f in (root / "var/cache/apt/archives").glob("*.deb"):
                shutil.copy(f, part / f.name)
            part.rename(debs)
        finally:
            subprocess.run(["rm", "-rf", str(root)])
        tmp.rename(tar)
        # older roots of this cache are dead weight
        for old in list(CACHE.glob("bookworm-*.tar")) + list(CACHE.glob("archives-*")):
            if old not in (tar, debs):
                subprocess.run(["rm", "-rf", str(old)])
        return tar, debs


def chroot_run(root, argv, timeout=300, input=None, net=False):
    """argv inside root, in a private mount namespace with its own /proc (gone at exit,
    so nothing stays mounted whatever happens). net=True: also in a network namespace of
    its own, with only a loopback interface (servers there may take any port)."""
    script = 'mount -t proc proc "$0/proc" && exec chroot "$0" "$@"'
    if net:
        script = "ip link set lo up && " + script
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LANG": "C.UTF-8"}
    return subprocess.run(["unshare", "--mount", "--propagation", "private", *(["--net"] if net else []), "--",
                           "sh", "-c", script,
                           str(root), *argv], capture_output=True, text=True, env=env, timeout=timeout,
                          input=input, stdin=None if input is not None else subprocess.DEVNULL)


def _scratch():
    """Where roots are unpacked: memory (/dev/shm) when it has room, for a root is a few
    hundred MB of small files that live for a minute; else the temp dir."""
    shm = Path("/dev/shm")
    try:
        st = os.statvfs(shm)
        if st.f_bavail * st.f_frsize > 2 << 30:
            return str(shm)
    except OSError:
        pass
    return None


def _unpack(tar):
    path = Path(tempfile.mkdtemp(prefix="tg-debroot-", dir=_scratch()))
    subprocess.run(["tar", "-C", str(path), "--numeric-owner", "--same-owner", "-xf", str(tar)], check=True)
    return path


class Root:
    """A fresh copy of the cached root in a temp dir; `run` executes inside it."""

    def __init__(self, deb):
        self.tar, debs = cached_tarball(deb)
        self.path = _unpack(self.tar)
        for f in debs.glob("*.deb"):
            shutil.copy(f, self.path / "var/cache/apt/archives" / f.name)
        # no service starts inside a chroot (mosquitto's postinst would try)
        rc = self.path / "usr/sbin/policy-rc.d"
        rc.write_text("#!/bin/sh\nexit 101\n")
        rc.chmod(0o755)

    def run(self, *argv, check=False, user=None, timeout=300, input=None, net=False):
        """argv inside the root (as user, if given)."""
        inner = ["runuser", "-u", user, "--", *argv] if user else list(argv)
        r = chroot_run(self.path, inner, timeout=timeout, input=input, net=net)
        if check and r.returncode != 0:
            raise AssertionError(f"{argv} exited {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        return r

    def copy_in(self, src, dest="/tmp"):
        target = self.path / dest.lstrip("/") / Path(src).name
        shutil.copy(src, target)
        return "/" + str(target.relative_to(self.path))

    def file(self, p):
        return self.path / p.lstrip("/")

    def installed(self, pkg):
        r = self.run("dpkg-query", "-W", "-f=${Status} ${Version}", pkg)
        return r.stdout.split()[-1] if r.returncode == 0 and "install ok installed" in r.stdout else None

    def destroy(self):
        subprocess.run(["rm", "-rf", "--one-file-system", str(self.path)])
