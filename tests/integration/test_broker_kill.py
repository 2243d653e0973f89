"""A broker kill -9 under load (issue 20, gap 3): what device_sim had acknowledged against
what reached the lake.

10 things at 200 msg/s each (2,000 msg/s, for 20 s) publish through mosquitto (mTLS) to the daemon;
the broker is killed with SIGKILL once the load is under way and started again about a
second later on the same port and persistence folder. device_sim reconnects and resends
what was in flight; the daemon reconnects at once. lost = acknowledged to a device and not
in the lake (distinct (thing, seq)).

 - With the registry plugin and `wait_for_gateway on`, the restarted broker lets no thing
   in before the gateway has subscribed again, so nothing is acknowledged to nobody:
   lost must be 0.
 - With the ACL file (no plugin), the restarted broker has the gateway's session only if an
   autosave stored it before the kill. The test reads when the broker last saved (its
   persistence file's mtime) against when the subscription was surely in place, and checks
   the daemon's reconnect reports session_present accordingly; it does not assume how fast
   the machine got to the kill. With the shipped autosave_interval (30 s) there is normally
   no such save: what devices publish between the broker's restart and the daemon's
   resubscription is acknowledged and dropped. That figure is measured and printed (README
   "Known limitations" states it). With autosave_interval 1 the test waits for a save after
   the subscription, then kills: the session survives and the loss is 0 (second case).
"""
import json
import subprocess
import time

import pytest

import harness
from harness import read_lake, wait_until

THINGS = [f"dev-{i:04d}" for i in range(1, 11)]


def registry_with_things(certs, tmp_path):
    db = tmp_path / "registry.db"
    for t in THINGS:
        r = subprocess.run([harness.BUILD / "tidegate", "device", "--db", db, "register", t,
                            "--cert", certs.thing(t)[0]], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    return db


def saved_at(b):
    """wall-clock time of the broker's last autosave (its persistence file), or None"""
    p = b.dir / "persist" / "mosquitto.db"
    try:
        return p.stat().st_mtime
    except FileNotFoundError:
        return None


def run_broker_kill(certs, daemons, tmp_path, extra_args, wait_for_save=False):
    b = harness.Broker(certs, tmp_path, extra_args=extra_args).start()
    try:
        d = daemons(b)
        sim, summary = harness.Sim.start(b, tmp_path, "--things", 10, "--rate", 200, "--duration", 20,
                                         "--qos", 1, "--seed", 20, "--drain-timeout", 60)
        # the load is under way: a good share of it is in the lake, so the daemon's
        # subscription is in the broker from here on
        wait_until(lambda: len(read_lake(d.lake)) >= 3000, 30, what="load under way")
        t_subscribed = time.time()
        if wait_for_save:  # an autosave taken from here on holds the daemon's session
            wait_until(lambda: (saved_at(b) or 0) > t_subscribed, 10, what="an autosave after the subscription")
        before = len(read_lake(d.lake))
        # whether the restarted broker can have the session is decided here, by the clock of
        # the broker's last save, not by how long this machine took to get here
        saved = saved_at(b)
        session_saved = saved is not None and saved > t_subscribed
        b.proc.kill9()
        wait_until(lambda: not harness.port_open(b.port), 10, what="broker gone")
        t_kill = time.monotonic()
        # started again about a second later (same port, same persistence folder)
        wait_until(lambda: time.monotonic() - t_kill >= 1.0, 5, what="a second")
        b.start()
        assert sim.wait(120) == 0, sim.text()
        s = json.loads(summary.read_text())
        acked = s["acked"]
        try:  # everything acknowledged in the lake; when some is lost, the wait ends at its deadline
            wait_until(lambda: len({(r["thing"], r["seq"]) for r in read_lake(d.lake)}) >= acked, 20,
                       what="lake caught up")
        except TimeoutError:
            pass
        d.stop()
        # the mechanism: did the restarted broker still have the daemon's session?
        present = [ln.rsplit("session_present=", 1)[1][:1] for ln in d.log().splitlines()
                   if "msg=connected" in ln and "session_present=" in ln]
        recs = read_lake(d.lake)
        distinct = {(r["thing"], r["seq"]) for r in recs}
        lost = acked - len(distinct)
        return dict(acked=acked, sent=s["sent"], lake=len(recs), distinct=len(distinct), lost=lost,
                    session_after_restart=present[-1] == "1" if len(present) >= 2 else None,
                    session_saved=session_saved, saved_before_subscription=saved is not None and not session_saved,
                    in_lake_at_kill=before, reconnects=s.get("reconnects"), broker_log=b.log())
    finally:
        b.stop()


@pytest.mark.slow
def test_broker_kill9_with_plugin_loses_nothing(certs, daemons, tmp_path):
    db = registry_with_things(certs, tmp_path)
    # autosave far beyond the run: the restarted broker never has the daemon's session,
    # whatever the machine's load made the run last (the case wait_for_gateway is for)
    r = run_broker_kill(certs, daemons, tmp_path, ["--plugin", harness.BUILD / "tidegate_auth.so",
                                                   "--registry", db, "--wait-for-gateway",
                                                   "--autosave", "86400"])
    print(f"broker kill -9, plugin + wait_for_gateway: acked {r['acked']} / sent {r['sent']}, "
          f"in the lake {r['distinct']} distinct ({r['lake']} records), lost {r['lost']}, "
          f"daemon's session after the restart: {r['session_after_restart']}")
    assert r["session_after_restart"] is False  # no autosave yet: the session was gone, and still nothing lost
    assert "until the gateway" in r["broker_log"] or "has subscribed" in r["broker_log"], r["broker_log"][-3000:]
    # devices were let in again and published well after the restart (the run lasts 20 s so
    # that a slow re-admission on a loaded machine still leaves seconds of load after it)
    assert r["acked"] - r["in_lake_at_kill"] >= 4000, r
    assert r["lost"] == 0, r


@pytest.mark.slow
@pytest.mark.parametrize("autosave", [None, 1])
def test_broker_kill9_acl_file_mode(certs, daemons, tmp_path, autosave):
    extra = [] if autosave is None else ["--autosave", str(autosave)]
    r = run_broker_kill(certs, daemons, tmp_path, extra, wait_for_save=autosave is not None)
    print(f"broker kill -9, ACL file, autosave_interval {autosave or 30}: acked {r['acked']} / sent {r['sent']}, "
          f"in the lake {r['distinct']} distinct, lost {r['lost']}, "
          f"daemon's session after the restart: {r['session_after_restart']}")
    assert r["acked"] - r["in_lake_at_kill"] >= 4000, r
    # the mechanism (issue 20): the restarted broker has the daemon's session exactly when a
    # save after the subscription came before the kill. With autosave_interval 1 the test waits
    # for one; with the shipped 30 s there is none unless this machine took 30 s to get here.
    if autosave:
        assert r["session_saved"], r
    if r["session_saved"] or not r["saved_before_subscription"]:
        assert r["session_after_restart"] is r["session_saved"], r
    if r["session_saved"]:  # the session (and its subscription) was stored before the kill
        assert r["lost"] == 0, r
