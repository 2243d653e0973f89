#!/usr/bin/env bash
# tests/bench/run-fleet.sh — `make bench-fleet` (and the end of `make bench`): the fleet rows
# of issue 19 (tests/bench/fleet.py) at a lower CPU priority. FLEET_SCALE=full (default),
# reduced or smoke. Makes the CA and service certificates when missing; the per-thing fleet
# certificates and registries are made and cached by fleet.py under certs/out/fleet/.
# Results: bench/results/fleet.md and fleet.json (smoke: bench/results/quick/).
set -euo pipefail
cd "$(dirname "$0")/../.."
B=${B:-build}
for f in tidegate device_sim bench_sub bench_fleet tidegate_auth.so; do
	[ -e "$B/rel/$f" ] || { echo "run-fleet.sh: $B/rel/$f missing; use make bench-fleet" >&2; exit 1; }
done
command -v mosquitto >/dev/null || { echo "run-fleet.sh: mosquitto missing (make deps)" >&2; exit 1; }
[ -f certs/out/loadgen.crt ] || certs/make-certs.sh certs/out >/dev/null
# 10,000 connections need 10,000 descriptors in the broker and in the load generator:
# fleet.py raises the soft limit to the hard one (and, as root, the hard one).
B=$B nice -n "${BENCH_NICE:-10}" /usr/bin/python3 tests/bench/fleet.py
