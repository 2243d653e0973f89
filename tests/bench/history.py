"""history.py — the per-commit record of the benchmark's headline figures, and the regression
guard that reads it (issue 19).

bench/results/history.tsv has one row per run, appended by `make bench` (kind "full"),
`make bench-quick` ("quick"), `make bench-fleet` ("fleet-<scale>") and `tests/bench/guard.py
--record` ("guard"): the end-to-end ratio to the broker's ceiling measured back to back in
that run, tidegate's CPU seconds per 1M messages, its RSS, and how busy the machine was.
Rows carry a machine class (CPU count and model), because a ratio from a laptop says nothing
about a Raspberry Pi. The guard compares against the last row of its kind and machine class
*as committed* (git show HEAD:...), so an uncommitted run never moves the bar.
"""
import datetime
import os
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HISTORY = REPO / "bench" / "results" / "history.tsv"
COLUMNS = ["date", "commit", "kind", "machine", "ceiling_msgs_per_s", "tidegate_msgs_per_s", "ratio",
           "cpu_s_per_1m", "rss_mib", "machine_busy"]


def machine_class():
    """'<n>cpu-<model>', e.g. 2cpu-intel-xeon-platinum-8375c-cpu-2-90ghz"""
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k.strip() in ("model name", "Model", "Hardware") and v.strip():
                    model = v.strip()
                    break
    except OSError:
        pass
    slug = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")[:60]
    return f"{os.cpu_count()}cpu-{slug}"


def git_commit():
    r = subprocess.run(["git", "-C", REPO, "describe", "--always", "--dirty"], capture_output=True, text=True)
    return r.stdout.strip() or "unknown"


def _fmt(v):
    if v is None:
        return ""
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def append(kind, ceiling, tidegate, cpu_s_per_1m=None, rss_mib=None, machine_busy=None, path=HISTORY):
    """one row; ratio = tidegate / ceiling (both msg/s of the same run)"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    ratio = tidegate / ceiling if ceiling and tidegate else None
    row = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), commit=git_commit(),
               kind=kind, machine=machine_class(), ceiling_msgs_per_s=ceiling, tidegate_msgs_per_s=tidegate,
               ratio=ratio, cpu_s_per_1m=cpu_s_per_1m, rss_mib=rss_mib, machine_busy=machine_busy)
    with open(path, "a") as f:
        if new:
            f.write("\t".join(COLUMNS) + "\n")
        f.write("\t".join(_fmt(row[c]) for c in COLUMNS) + "\n")
    return row


def parse(text):
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return []
    head = lines[0].split("\t")
    return [dict(zip(head, ln.split("\t"))) for ln in lines[1:]]


def committed_rows(rev="HEAD"):
    r = subprocess.run(["git", "-C", REPO, "show", f"{rev}:bench/results/history.tsv"], capture_output=True, text=True)
    return parse(r.stdout) if r.returncode == 0 else []


def baseline(rows, kind, machine):
    """the last row of that kind and machine class with a ratio, or None"""
    for row in reversed(rows):
        if row.get("kind") == kind and row.get("machine") == machine and row.get("ratio"):
            try:
                return float(row["ratio"])
            except ValueError:
                continue
    return None


def verdict(base, ratios, tolerance=0.10):
    """The guard's decision from the attempts so far: 'pass' as soon as one attempt is within
    tolerance of the baseline (a loaded machine slows single attempts; a regression slows
    every one), 'fail' when every attempt is below, 'none' without a baseline."""
    if base is None:
        return "none"
    floor = base * (1 - tolerance)
    return "pass" if any(r >= floor for r in ratios) else "fail"
