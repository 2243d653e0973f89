#!/usr/bin/env python3
"""`make footprint`: the README's footprint table, measured on this machine.

For each architecture: the .deb's size, its Installed-Size, the stripped daemon's size as
packaged, and the daemon's resident memory when idle — connected to a real mosquitto
with the packaged configuration's shape (lake sink, shipped rules and schemas), after
15 s with no traffic. The arm64 daemon runs under qemu-user, so its figure is the
emulator's process (the guest program plus qemu's own code and translation cache): an
upper bound, not what an arm64 box shows. Prints a markdown table.
"""
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
import harness  # noqa: E402

VERSION = subprocess.run(["dpkg-parsechangelog", "-l", str(REPO / "packaging/debian/changelog"), "-S", "Version"],
                         check=True, capture_output=True, text=True).stdout.strip()
ARCHES = {"amd64": [], "arm64": ["qemu-aarch64-static", "-L", "/"]}


def kib(n):
    return f"{n / 1024:.0f} KiB"


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def idle_rss(arch, wrapper, work):
    certs = harness.Certs(work / "certs", things=1)
    broker = harness.Broker(certs, work).start()
    exe = REPO / "build" / "deb" / arch / "rel" / "tidegate"
    d = harness.Daemon(broker, work, exe=exe, wrapper=wrapper, name=f"tg-{arch}", extra=f"""[ingest]
rules_dir = {REPO / 'rules'}
schemas_dir = {REPO / 'rules' / 'schemas'}
""")
    try:
        d.start()
        time.sleep(15)  # the measurement: idle for 15 s after connecting
        return rss_kib(d.proc.p.pid)
    finally:
        d.stop()
        broker.stop()


def main():
    rows = []
    for arch, wrapper in ARCHES.items():
        deb = REPO / "build" / f"tidegate_{VERSION}_{arch}.deb"
        inst = int(subprocess.run(["dpkg-deb", "-f", str(deb), "Installed-Size"], capture_output=True,
                                  text=True, check=True).stdout)
        binary = (REPO / "build" / "deb" / arch / "stage" / "usr" / "bin" / "tidegate").stat().st_size
        with tempfile.TemporaryDirectory(prefix="tg-footprint-") as t:
            rss = idle_rss(arch, wrapper, Path(t))
        rows.append((arch, kib(deb.stat().st_size), f"{inst} KiB", kib(binary),
                     f"{rss / 1024:.1f} MiB" + (" (emulated: qemu-user)" if wrapper else "")))
    print("| architecture | .deb | installed | /usr/bin/tidegate (stripped) | idle RSS |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
