#!/usr/bin/env bash
# tests/bench/run.sh — `make bench` / `make bench-quick` (BENCH_QUICK=1): builds nothing itself
# (the Makefile did), makes sure the certificates and the pinned Node-RED peer are present,
# then runs the Python driver tests/bench/bench.py at a lower CPU priority (the box is shared)
# and turns its numbers into bench/results/results.png and results-time.png with gnuplot.
# Results: bench/results/results.md (table), results.json (every raw number), results.png
# (throughput, RSS), results-time.png (saturation, soak and dead-sink time series);
# BENCH_QUICK=1 writes the same files to bench/results/quick/.
# Everything listens on 127.0.0.1 only; the driver stops every process it started on any exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$(pwd)
B=${B:-build}
BIN=$REPO/$B/rel
OUT=$REPO/bench/results
[ "${BENCH_QUICK:-}" = 1 ] && OUT=$OUT/quick # a quick run keeps the last full run's figures
OUT=${BENCH_OUT:-$OUT} # BENCH_OUT=dir: a run of a few rows (BENCH_ONLY) keeps the committed figures
NR=$REPO/tests/bench/node-red
NICE=${BENCH_NICE:-10}

for f in tidegate device_sim bench_sub bench_outbox bench_shadow; do
	[ -x "$BIN/$f" ] || { echo "run.sh: $BIN/$f missing; use make bench" >&2; exit 1; }
done
command -v mosquitto >/dev/null || { echo "run.sh: mosquitto missing (make deps)" >&2; exit 1; }
[ -f certs/out/loadgen.crt ] || certs/make-certs.sh certs/out >/dev/null
# the saturation and dead-sink rows: 20 things, each with its own certificate (idempotent)
[ -f certs/out/things/dev-0020.crt ] || certs/make-certs.sh certs/out --things 20 >/dev/null

# BENCH_ONLY=a,b: install a peer only when its row runs
only() { [ -z "${BENCH_ONLY:-}" ] || [[ ",$BENCH_ONLY," == *",$1,"* ]]; }

# The peer: Node-RED pinned by tests/bench/node-red/package.json + package-lock.json.
# npm ci installs exactly the lock; no audit/fund/update-notifier traffic.
if only node-red && [ ! -f "$NR/node_modules/node-red/red.js" ]; then
	if command -v npm >/dev/null; then
		echo "run.sh: installing the pinned Node-RED into $NR (npm ci)"
		(cd "$NR" && NO_UPDATE_NOTIFIER=1 npm ci --no-audit --no-fund --loglevel=error) ||
			echo "run.sh: Node-RED install failed; the peer column will be empty" >&2
	else
		echo "run.sh: npm missing; the peer column will be empty" >&2
	fi
fi

# The upstream peers (kinesalite, s3rver) of the integration tests, for the three-sink drain.
if only upstream && [ -x tests/integration/npm-peers.sh ]; then
	tests/integration/npm-peers.sh || echo "run.sh: kinesalite/s3rver install failed; no three-sink drain" >&2
fi

mkdir -p "$OUT"
B=$B nice -n "$NICE" /usr/bin/python3 tests/bench/bench.py

if command -v gnuplot >/dev/null && [ -s "$OUT/results.dat" ]; then
	gnuplot -e "datafile='$OUT/results.dat'; outfile='$OUT/results.png'; title='$( [ "${BENCH_QUICK:-}" = 1 ] && echo 'BENCH_QUICK' || echo 'full run')'" \
		tests/bench/plot.gp && echo "run.sh: wrote $OUT/results.md results.json results.png"
else
	echo "run.sh: gnuplot missing (apt-get install gnuplot-nox); no plot" >&2
fi

# the time series: one panel per row that ran (bench.py removes the files of rows that did not)
vars=
[ -s "$OUT/time-saturation.dat" ] && vars="$vars satfile='$OUT/time-saturation.dat';"
[ -s "$OUT/time-saturation-ceiling.dat" ] && vars="$vars satceil='$OUT/time-saturation-ceiling.dat';"
[ -s "$OUT/time-soak.dat" ] && vars="$vars soakfile='$OUT/time-soak.dat';"
[ -s "$OUT/time-dead.dat" ] && vars="$vars deadfile='$OUT/time-dead.dat';"
if [ -z "$vars" ]; then
	rm -f "$OUT/results-time.png"
elif command -v gnuplot >/dev/null; then
	gnuplot -e "$vars outfile='$OUT/results-time.png'; title='$( [ "${BENCH_QUICK:-}" = 1 ] && echo 'BENCH_QUICK' || echo 'full run')'" \
		tests/bench/plot-time.gp && echo "run.sh: wrote $OUT/results-time.png"
fi
