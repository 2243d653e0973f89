"""fleet_rules.py — a realistic rule folder of N rules for the fleet benchmark's rules row.

The shipped rules (rules/*.json) plus generated ones in the shapes a site accumulates over
years: about 95 % watch other topics (other device families, status and event topics, other
sites; their filters never match devices/+/telemetry), about 5 % read the same telemetry with
a condition that rarely holds (a per-device threshold, a sensor-id regex). Deterministic:
the same N gives the same files. Used by tests/bench/fleet.py and its smoke test.
"""
import json
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_OTHER = [
    "SELECT state, topic(2) AS thing FROM 'site/{i}/+/status' WHERE state = 'fault'",
    "SELECT * FROM 'devices/+/events/door{i}' WHERE open = true",
    "SELECT level, topic(3) AS line FROM 'factory/line{i}/+/level' WHERE level > 90",
    "SELECT voltage FROM 'devices/+/battery/{i}' WHERE voltage < 3.3",
    "SELECT code, topic(2) AS thing FROM 'plant{i}/#' WHERE code <> 0",
    "SELECT rpm FROM 'machines/m{i}/telemetry' WHERE rpm > 3000",
]
_SAME = [
    "SELECT sensor_id, temperature FROM 'devices/+/telemetry' WHERE temperature > {t} AND sensor_id = 'probe-{i}'",
    "SELECT sensor_id, humidity FROM 'devices/+/telemetry' WHERE humidity > 99.{d} AND regexp_matches(sensor_id, '^probe-{i}$')",
]


def make_rules(dest, n, matching_every=20):
    """write the shipped rules plus generated ones, n in total, into dest (replaced)"""
    dest = Path(dest)
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    shipped = sorted((REPO / "rules").glob("*.json"))
    for p in shipped:
        shutil.copy(p, dest / p.name)
    for i in range(max(0, n - len(shipped))):
        if i % matching_every == matching_every - 1:
            sql = _SAME[i % len(_SAME)].format(i=i, t=60 + i % 30, d=i % 10)
        else:
            sql = _OTHER[i % len(_OTHER)].format(i=i)
        rule = {"description": f"generated rule {i} (fleet benchmark)", "sql": sql, "ruleDisabled": False,
                "awsIotSqlVersion": "2016-03-23",
                "actions": [{"republish": {"topic": f"alerts/generated/{i}", "qos": 1}}]}
        (dest / f"gen-{i:05d}.json").write_text(json.dumps(rule, indent=2) + "\n")
    return dest
