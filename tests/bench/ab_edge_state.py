#!/usr/bin/python3
"""A/B of the edge state's persistence on the benchmark's end-to-end row (issue 20, gap 1).

The same build and load as `make bench`'s "tidegate end to end" row (device_sim, 4 mTLS
connections, 100 things, QoS 1, ~150-byte JSON -> mosquitto -> tidegate -> outbox -> file
sink, counted at the sink), with the shipped rules, schemas and aggregates, run with
[ingest] persist_edge_state off and on, alternately and back to back (the machine is
shared: only a ratio measured in one run means anything). Prints each run, the median
of the per-pair throughput ratios and of the daemon's CPU seconds per message (less noisy). Usage: B=build AB_PAIRS=3 BENCH_MSGS=40000 tests/bench/ab_edge_state.py
"""
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("BENCH_QUICK", "1")
import bench  # noqa: E402

PAIRS = int(os.environ.get("AB_PAIRS", "3"))
_conf = bench.tidegate_conf


def main():
    import tempfile
    root = Path(tempfile.mkdtemp(prefix="tg-ab-edgestate-"))
    rates = {"off": [], "on": []}
    ratios, cpu_ratios = [], []
    for i in range(PAIRS):
        pair = {}
        for mode in ("off", "on") if i % 2 == 0 else ("on", "off"):
            def conf(d, port, http, lake, data, _mode=mode, **kw):
                kw["aggregates"] = True
                kw["ingest"] = list(kw.get("ingest", ())) + [f"persist_edge_state = {'true' if _mode == 'on' else 'false'}"]
                return _conf(d, port, http, lake, data, **kw)
            bench.tidegate_conf = conf
            r = bench.run_tidegate(root / f"{mode}-{i}")
            ok = r["complete"]
            print(f"pair {i} persist_edge_state={mode}: {r['msgs_per_s']:.0f} msg/s complete={ok} "
                  f"cpu_s_per_1m={r['cpu_s_per_1m']:.2f} rss_steady={r['rss_steady_mib']:.1f} MiB "
                  f"wal_peak={r.get('wal_peak_bytes')}", flush=True)
            rates[mode].append(r["msgs_per_s"])
            pair[mode] = r
        ratios.append(pair["on"]["msgs_per_s"] / pair["off"]["msgs_per_s"])
        cpu_ratios.append(pair["on"]["cpu_s_per_1m"] / pair["off"]["cpu_s_per_1m"])
    print(f"median on/off ratio {statistics.median(ratios):.3f} (pairs: {', '.join(f'{x:.3f}' for x in ratios)}); "
          f"median off {statistics.median(rates['off']):.0f} msg/s, on {statistics.median(rates['on']):.0f} msg/s; "
          f"daemon CPU per message on/off: median {statistics.median(cpu_ratios):.3f} "
          f"(pairs: {', '.join(f'{x:.3f}' for x in cpu_ratios)})")


if __name__ == "__main__":
    main()
