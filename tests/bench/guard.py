#!/usr/bin/python3
"""guard.py — the throughput regression guard of `make check` (issue 19).

Measures the quick end-to-end ratio: the load-mode ceiling (device_sim, 4 mTLS connections,
QoS 1, max rate -> mosquitto -> counting subscriber), tidegate with the shipped rules on the
same load, and the ceiling again; ratio = tidegate / mean of the two ceilings around it, so a
neighbour's burst during one of them moves both sides. Compared with the last committed
"guard" row of bench/results/history.tsv for this machine class (tests/bench/history.py):
fails only when every one of up to GUARD_ATTEMPTS (3) attempts is more than 10 % below it —
a loaded machine slows some attempts, a regression slows all of them. Without a committed
baseline for this machine class it says so and passes (the ratio is still measured, and
must be a complete run).

Usage: guard.py [--record]  (--record appends this run's row; commit it to set the bar)
Exit: 0 pass / no baseline, 1 regression, 2 the harness failed. GUARD_MSGS (default 20000).
"""
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench as B  # noqa: E402
import history  # noqa: E402

MSGS = int(os.environ.get("GUARD_MSGS", 20000))
ATTEMPTS = int(os.environ.get("GUARD_ATTEMPTS", 3))


def attempt(work, i):
    B.P["msgs"] = MSGS
    c1 = B.run_ceiling(work / f"ceiling-a-{i}")
    tg = B.run_tidegate(work / f"tidegate-{i}")
    c2 = B.run_ceiling(work / f"ceiling-b-{i}")
    if not (c1["complete"] and c2["complete"] and tg["complete"]):
        raise RuntimeError(f"incomplete run: ceiling {c1['complete']}/{c2['complete']}, tidegate {tg['complete']}")
    ceil = (c1["msgs_per_s"] + c2["msgs_per_s"]) / 2
    return dict(ceiling=ceil, tidegate=tg["msgs_per_s"], ratio=tg["msgs_per_s"] / ceil,
                cpu_s_per_1m=tg["cpu_s_per_1m"], rss_mib=tg["rss_steady_mib"], busy=tg["machine_busy"])


def main():
    record = "--record" in sys.argv[1:]
    machine = history.machine_class()
    base = history.baseline(history.committed_rows(), "guard", machine)
    B.log(f"guard: machine class {machine}, committed baseline ratio {base}, {MSGS} messages per run")
    work = Path(tempfile.mkdtemp(prefix="tg-guard-"))
    runs = []
    try:
        for i in range(ATTEMPTS):
            try:
                runs.append(attempt(work, i))
            except (RuntimeError, TimeoutError, OSError, KeyError) as e:
                print(f"guard: harness failure: {e}", flush=True)
                return 2
            r = runs[-1]
            B.log(f"  attempt {i + 1}: ceiling {r['ceiling']:.0f} msg/s, tidegate {r['tidegate']:.0f} msg/s, "
                  f"ratio {r['ratio']:.3f} (machine busy {r['busy'] * 100:.0f} %)")
            v = history.verdict(base, [x["ratio"] for x in runs])
            if v != "fail":
                break
    finally:
        B.stop_all()
        import shutil
        shutil.rmtree(work, ignore_errors=True)
    best = max(runs, key=lambda x: x["ratio"])
    if record:
        history.append("guard", best["ceiling"], best["tidegate"], best["cpu_s_per_1m"], best["rss_mib"], best["busy"])
        B.log(f"guard: recorded ratio {best['ratio']:.3f} in {history.HISTORY}")
    v = history.verdict(base, [x["ratio"] for x in runs])
    if v == "none":
        print(f"guard: no committed baseline for machine class {machine}; measured ratio {best['ratio']:.3f} "
              f"(record one with tests/bench/guard.py --record and commit bench/results/history.tsv)")
        return 0
    if v == "fail":
        print(f"guard: REGRESSION: best ratio {best['ratio']:.3f} over {len(runs)} attempts is more than 10 % below "
              f"the committed {base:.3f} (floor {base * 0.9:.3f})")
        return 1
    print(f"guard: ok, ratio {best['ratio']:.3f} against the committed {base:.3f} (floor {base * 0.9:.3f})")
    return 0


if __name__ == "__main__":
    t0 = time.monotonic()
    rc = main()
    B.log(f"guard: done in {time.monotonic() - t0:.0f} s")
    sys.exit(rc)
