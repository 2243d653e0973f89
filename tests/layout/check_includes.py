#!/usr/bin/python3
"""check_includes.py — keep gateway/'s layout true: includes follow the data path one way.

The stage folders of gateway/, lowest first. A file may include headers of its own folder
and of the folders before it, never of one after it; the files directly in gateway/ (main,
daemon, ingest, preflight: the wiring) may include anything, and nothing else may include
them. So core/ depends on nothing of ours, and every stage only on those a message meets
before it (the order is README's Layout table; this list is where it is written down).

Usage: check_includes.py [ROOT]   (ROOT defaults to the checkout this file is in)
Prints one "file:line: ..." per violation and exits 1 if there is any.
"""
import os
import re
import sys

LAYERS = [
    "core",      # config, log, errors, buffers, time and topic helpers: uses nothing of ours
    "mqtt",      # the broker connection (transport)
    "registry",  # the device registry (SQLite), read by the auth plugin, the daemon and ops
    "edge",      # payload checks and per-thing state kept before the rules: schema, dedupe, aggregates
    "rules",     # the IoT SQL engine
    "alerts",    # the stateful rule action (consumes the rule engine's action outputs)
    "store",     # the outbox, the forwarder and the sink interface they drive
    "sinks",     # the sink implementations (implement store/sink.h)
    "shadow",    # the Device Shadow service (stores through the outbox)
    "auth",      # the Mosquitto plugin (registry + policies)
    "ops",       # HTTP, metrics, systemd notify, the operator's console
]
RANK = {name: i for i, name in enumerate(LAYERS)}
TOP = len(LAYERS)  # gateway/*.c|h: the wiring

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')


def layer_of(rel):
    """rel is a path relative to gateway/."""
    parts = rel.split("/")
    if len(parts) == 1:
        return TOP
    if parts[0] not in RANK:
        return None
    return RANK[parts[0]]


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    gw = os.path.join(root, "gateway")
    bad = []
    for dirpath, _, files in os.walk(gw):
        for fn in sorted(files):
            if not fn.endswith((".c", ".h")):
                continue
            path = os.path.join(dirpath, fn)
            rel = os.path.relpath(path, gw)
            src = layer_of(rel)
            if src is None:
                bad.append(f"gateway/{rel}:1: folder {rel.split('/')[0]}/ is not a stage folder (add it to LAYERS in {os.path.relpath(__file__, root)})")
                continue
            with open(path, encoding="utf-8") as f:
                for lineno, line in enumerate(f, 1):
                    m = INCLUDE.match(line)
                    if not m:
                        continue
                    inc = m.group(1)
                    if ".." in inc.split("/"):
                        bad.append(f"gateway/{rel}:{lineno}: \"{inc}\": include paths are relative to gateway/, no ..")
                        continue
                    if not os.path.exists(os.path.join(gw, inc)):
                        bad.append(f"gateway/{rel}:{lineno}: \"{inc}\" is not a file under gateway/ (write it relative to gateway/)")
                        continue
                    dst = layer_of(inc)
                    if dst is None or dst <= src:
                        continue
                    what = "the wiring" if dst == TOP else f"{LAYERS[dst]}/"
                    here = "the wiring" if src == TOP else f"{LAYERS[src]}/"
                    bad.append(f"gateway/{rel}:{lineno}: {here} includes \"{inc}\" of {what}, which comes after it "
                               f"(order: {' < '.join(LAYERS)} < the wiring)")
    for b in bad:
        print(b)
    if bad:
        print(f"{len(bad)} include(s) against the flow", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
