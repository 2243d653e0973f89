"""The short chaos run (issue 20) inside `make check`: tests/chaos/chaos.py --short — one pass
of each fault under a small mTLS load with the auth plugin, every sink read back (DuckDB for
the lake, boto3 for Kinesis and S3) — and what it must show.

Asserted, per fault (a message belongs to the phase in which the broker acknowledged it):
- nothing acknowledged is lost in any sink while the daemon stays connected to the broker
  (baseline, uplink outage, black hole, slow uplink, SIGHUP storm, clock jumps);
- the sinks never disagree: a message in one sink is in all three (what the gateway accepted
  it delivered everywhere, whatever the fault);
- nothing is lost where the gateway's connection goes (daemon kill -9, broker stop and kill -9,
  the disk-full reconnects): the daemon's persistent session keeps receiving while it is away
  (the auth plugin keeps the identity the session was made with), and a restarted broker lets
  no device in before the daemon has subscribed again (plugin_opt_wait_for_gateway);
- an uplink outage ends within 5 s for Kinesis and S3 with retry_cap at its default 30 s (the
  probe; `make chaos` records the figure, under 2 s when the machine is not shared);
- a black-holed uplink does not hang a daemon stop; a full disk shows in /metrics and the log
  and leaves an intact outbox; hundreds of SIGHUPs leave the daemon alive and its RSS flat; the
  clock steps file records under the neighbouring hours and lose nothing.
"""
import os
import sys
from pathlib import Path

import pytest

import harness

sys.path.insert(0, str(harness.REPO / "tests" / "chaos"))
import chaos  # noqa: E402

# Marked so that `make chaos` can run it on its own first; `make check` runs it with the rest
# of the integration tests (the optimised build only). It was out of `make check` while it
# sometimes found the outbox corrupt: SQLite's WAL-reset race, which the outbox's
# checkpoints now stay clear of (outbox.c, ckpt_run; tests/integration/test_outbox_stress.py).
pytestmark = pytest.mark.chaos

CONNECTED = {"baseline", "uplink_outage", "uplink_slow", "sighup_storm", "clock_jump"}


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the chaos run mounts a tmpfs for data_dir (root)")
    work = tmp_path_factory.mktemp("chaos")
    r = chaos.run(work, "short", seed=20)
    r["broker_log"] = (work / "broker" / "mosquitto.log").read_text(errors="replace")
    (work / "chaos.md").write_text(chaos.to_markdown(r, "tests/chaos/chaos.py --short"))
    print(chaos.to_markdown(r, "tests/chaos/chaos.py --short"))
    return r


def phase(r, name):
    return next(p for p in r["phases"] if p["fault"].startswith(name))


@pytest.mark.slow
def test_no_loss_while_the_gateway_stays_connected(result):
    for p in result["phases"]:
        if p["fault"] in CONNECTED:
            for s, v in p["sinks"].items():
                assert v["lost"] == 0, (p["fault"], s, v)
    assert all(p["acked"] > 0 for p in result["phases"] if p["fault"] in CONNECTED)


@pytest.mark.slow
def test_sinks_agree_and_nothing_is_lost(result):
    lost = {s: v["lost"] for s, v in result["sinks"].items()}
    assert len(set(lost.values())) == 1, lost
    for p in result["phases"]:
        assert len({v["lost"] for v in p["sinks"].values()}) == 1, p
    for p in result["phases"]:
        for s, v in p["sinks"].items():
            assert v["lost"] == 0, (p["fault"], s, v)
    for s, v in result["sinks"].items():
        assert v["distinct_keys"] >= v["acked"] - v["lost"], (s, v)
    assert result["outbox_integrity"] == "ok"
    assert result["drained"] and result["outbox_rows_in_db"] == 0, result
    assert result["daemon_exit"] == 0
    assert result["device_sim"]["failed"] == 0


@pytest.mark.slow
def test_uplink_recovery_follows_the_endpoint(result):
    p = phase(result, "uplink_outage")
    for s in ("kin", "s3"):
        rec = p["sinks"][s]["recovery_s"]
        assert rec is not None and rec <= 5.0, (s, p)


@pytest.mark.slow
def test_blackhole_disk_full_sighup_and_clock(result):
    bh = phase(result, "uplink_blackhole")
    assert bh["daemon_stop_rc"] == 0 and bh["daemon_stop_s"] < 15, bh
    df = phase(result, "disk_full")
    assert df["disk_full_in_metrics"] is True, df
    assert result["disk_full_logged"]
    hup = phase(result, "sighup_storm")
    assert hup["alive"] and hup["reloads_logged"] >= 20, hup
    assert hup["rss_after_mb"] - hup["rss_before_mb"] < 2.0, hup
    assert len(result["lake_hour_partitions"]) >= 3, result["lake_hour_partitions"]
    rss = [v for _, v in result["rss_mb"]["series"][2:]]
    assert max(rss) < 64, rss
