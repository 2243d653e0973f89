"""The outbox's connections racing each other, then SQLite's integrity check (issue 20).

tests/tools/outbox_stress runs the real outbox.c: an ingest writer committing groups, the
checkpoint thread, and forwarder readers that read, settle (queued deletions, dead letters,
retries), delete on their own and vacuum, with a WAL bound small enough that the WAL starts
over many times a second, which is when checkpoints and commits meet (the WAL-reset race of
SQLite before 3.51.3; Debian 12 has 3.40.1: a checkpoint starting right after another copied
the whole WAL back, while a commit restarts the WAL). The outbox runs no checkpoint from a
complete copy until a commit has finished (outbox.c, ckpt_run); the tool reports how often
that held one back (checkpoints_skipped), so the test knows the window was reached. It then
closes the outbox, runs PRAGMA integrity_check on the file, and checks the books: every row
of a committed group delivered or dead-lettered, none left, none twice.

The second case puts the outbox on a 24 MiB tmpfs and stops the readers for 2 s in every 4,
so the backlog fills the file system: appends must stop (counted as refused, never
acknowledged) before the disk is so full that the checkpoint and the deletions cannot run,
and everything must drain once the readers return. Before, the backlog filled the disk, the
deletions failed for want of WAL space, and nothing was ever freed. A group hook stands for
the modules that note something per record before the append (dedupe, aggregates): a
refused record's note must be taken back.
"""
import json
import os
import subprocess

import pytest

import harness


def stress(db, *args, timeout=120):
    r = subprocess.run([harness.BUILD / "tools" / "outbox_stress", "--db", db, *map(str, args)],
                       capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    assert lines, (r.returncode, r.stdout[-2000:], r.stderr[-4000:])
    out = json.loads(lines[-1])
    return r, out


def test_connections_racing_leave_a_sound_outbox(tmp_path):
    r, out = stress(tmp_path / "outbox.db", "--seconds", 8, "--readers", 3, "--wal-max", 1 << 20)
    print(out)
    assert out["integrity"] == "ok", out
    assert out["ok"] and r.returncode == 0, (out, r.stderr[-4000:])
    assert out["appended"] > 10000, out
    # the WAL started over many times while the connections raced: the case being tested
    assert out["wal_restarts"] > 50, out
    # and checkpoints wanted to start in the race's window, and were held back
    assert out["checkpoints_skipped"] > 0, out
    assert out["queued"] == 0 and out["delivered"] + out["dead"] == out["rows_expected"], out


@pytest.fixture
def small_fs(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    d = tmp_path / "fs"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m,mode=0700", "tmpfs", d], check=True)
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", d], check=False)


def test_a_backlog_that_fills_the_disk_drains_by_itself(small_fs):
    r, out = stress(small_fs / "outbox.db", "--seconds", 12, "--readers", 2, "--outage-ms", 2000,
                    "--small-fs", 1, "--wal-max", 4 << 20)
    print(out)
    # the disk did fill: appends were refused (and counted) while it was low
    assert out["refused_full"] > 0, out
    assert "disk full (less free space than the outbox needs to go on)" in r.stderr, r.stderr[-3000:]
    assert "free space back, taking records again" in r.stderr, r.stderr[-3000:]
    # SQLite itself never ran out of space: the outbox stopped before it did
    assert "database or disk is full" not in r.stderr, r.stderr[-3000:]
    assert out["integrity"] == "ok", out
    assert out["ok"] and r.returncode == 0, (out, r.stderr[-4000:])
    assert out["queued"] == 0 and out["delivered"] + out["dead"] == out["rows_expected"], out
    # what a module noted before each append (dedupe, aggregates) was stored with the record
    # or taken back: a refused record's note kept made its redelivery a "duplicate" (lost)
    assert out["notes_committed"] == out["appended"], out
    assert out["wal_peak_bytes"] <= 6 << 20, out  # the bound and one group; a vacuum step once took it to 7.9 MiB
