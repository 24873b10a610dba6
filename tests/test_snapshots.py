"""Snapshots: restore + replay forward reaches exactly the straight replay's state; the catalog's
dedup, thinning, crash safety and refusal of foreign or corrupt content."""
from __future__ import annotations

import io
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from snapshots.catalog import Catalog, CatalogError
from snapshots.policy import DEFAULT_TIERS, to_delete
from tests.conftest import ROOT, run_urr
from urr.options import parse_args
from urr.session import Session, SessionError


def replay_session(guest: str, rr: str, *extra: str) -> Session:
    opts = parse_args(["-kernel", guest, "-serial", "none", "-icount",
                       f"shift=7,rr=replay,rrfile={rr},rrsnapshot=init", *extra])
    return Session(opts, out=io.BytesIO(), stdin_fd=None)


def full_state(session: Session) -> tuple:
    m = session.machine
    return (m.icount, session.state_hash(), m.board.get_state(), m.halted,
            {t.name: t.deadline for t in m.timers.timers if not t.internal})


def record(guest: str, rr: str, *extra: str, stdin: bytes | None = None):
    rec = run_urr("-kernel", guest, "-icount", f"shift=7,rr=record,rrfile={rr},rrsnapshot=init", *extra,
                  stdin=stdin)
    assert rec.status % 2 == 1, rec.err
    return rec


@pytest.mark.parametrize("name", ["ticks", "cpuloop", "disk", "corrupt"])
def test_restore_then_replay_matches_straight_replay(guests, disk_image, tmp_path, name):
    rr = str(tmp_path / f"{name}.rr")
    record(guests[name], rr, "-drive", f"file={disk_image}")
    straight = replay_session(guests[name], rr)
    end = straight.run().icount
    rng = random.Random(5)
    targets = sorted(rng.randrange(1, end) for _ in range(6))
    expected = {}
    probe = replay_session(guests[name], rr, "-snapshots", "off")
    for t in targets:
        probe.run(t)
        expected[t] = full_state(probe)
    probe.close(None, "test")
    # From the snapshots the straight replay left (dense near its end), seek to each target.
    session = replay_session(guests[name], rr, "-snapshots", "off")
    snaps = session.snapshots
    assert len(snaps.infos) >= 2
    for t in reversed(targets):
        info = snaps.nearest(t)
        snaps.restore(info.name)
        session.run(t)
        assert full_state(session) == expected[t], f"state differs at icount {t} from {info.name}"
    session.close(None, "test")
    straight.close(None, "test")


def _snapshot_when(session: Session, condition, step: int = 97, limit: int = 5_000_000) -> int:
    """Run until `condition(machine)` holds at some icount; take a named snapshot there."""
    m = session.machine
    while not condition(m):
        assert m.icount < limit, "condition never held"
        session.run(m.icount + step)
    session.snapshots.take("here", "named")
    return m.icount


def _check_snapshot_resumes(session: Session) -> None:
    at = session.machine.icount
    session.run()
    final = full_state(session)
    session.snapshots.restore("here")
    assert session.machine.icount == at
    session.run()
    assert full_state(session) == final


def test_snapshot_in_the_middle_of_a_disk_transfer(guests, disk_image, tmp_path):
    rr = str(tmp_path / "disk.rr")
    record(guests["disk"], rr, "-drive", f"file={disk_image}")
    session = replay_session(guests["disk"], rr, "-snapshots", "off")
    _snapshot_when(session, lambda m: m.ata.timer.deadline is not None, step=50)
    _check_snapshot_resumes(session)


def test_snapshot_with_pending_serial_input(guests, tmp_path):
    rr = str(tmp_path / "echo.rr")
    proc = subprocess.Popen([sys.executable, "-m", "urr", "-display", "none", "-kernel", guests["echo"],
                             "-icount", f"shift=7,rr=record,rrfile={rr},rrsnapshot=init"],
                            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdin.write(b"one two three four five six seven eight nine ten\nquit\n")
    proc.stdin.flush()
    proc.communicate(timeout=60)
    session = replay_session(guests["echo"], rr, "-snapshots", "off")
    _snapshot_when(session, lambda m: len(m.uart.rx) > 0, step=7)
    _check_snapshot_resumes(session)


def test_dedup_pages_shared_between_snapshots(guests, tmp_path):
    rr = str(tmp_path / "t.rr")
    record(guests["ticks"], rr, "-snapshots", "10ms:1s,100ms")
    catalog = Catalog.open_existing(rr + ".db")
    catalog.gc()
    maps = [catalog.load(i.name).pages for i in catalog.list()]
    distinct = {h for m in maps for h in m.values()}
    stored = catalog.db.execute("SELECT count(*) FROM blobs").fetchone()[0]
    assert stored == len(distinct)  # each content stored once, nothing unreferenced after gc
    assert stored < sum(len(m) for m in maps) / 2  # pages shared by many snapshots
    catalog.close()


def test_thinning_keeps_what_the_policy_says(guests, tmp_path):
    rr = str(tmp_path / "c.rr")
    record(guests["cpuloop"], rr, "-snapshots", "10ms:1s,100ms")
    catalog = Catalog.open_existing(rr + ".db")
    infos = catalog.list()
    periodic = sorted(i.vtime_ns for i in infos if i.kind == "periodic")
    end_ns = max(periodic)
    near = [v for v in periodic if end_ns - v <= 1_000_000_000]
    far = [v for v in periodic if end_ns - v > 1_000_000_000]
    assert near and far
    # One in every 10 ms bucket of the last second, each at most a quarter interval past its
    # grid point (taken at the first slice boundary there).
    buckets = [v // 10_000_000 for v in near]
    assert buckets == list(range(buckets[0], buckets[0] + len(near)))
    assert all(v % 10_000_000 <= 2_500_000 for v in near)
    assert len({v // 100_000_000 for v in far}) == len(far)  # one per 100 ms bucket
    assert to_delete(infos, end_ns, DEFAULT_TIERS) == []
    assert any(i.kind == "initial" and i.name == "init" for i in infos)
    # Content only thinned snapshots referred to never reached the file (it was 69% of it).
    assert catalog.stats().garbage == []
    catalog.close()


@pytest.mark.parametrize("policy, held", [("10ms:1s,100ms", True), ("10ms:1000s,100ms", False),
                                           ("100ms", False)])
def test_the_snapshots_the_policy_thins_soon_are_marked_for_the_writer_to_hold(
        guests, tmp_path, monkeypatch, policy, held):
    """A periodic snapshot that is not the first in its interval of the second tier will be
    thinned once it is a first-tier horizon behind: with a short horizon the writer may hold it
    back (snapshots.held), so it is marked provisional; the first of each interval is not. No
    snapshot is provisional when the horizon spans too many to hold, or with one tier."""
    from snapshots.writer import CatalogWriter
    marks: list[tuple[int, bool]] = []
    submit = CatalogWriter.submit_capture
    monkeypatch.setattr(CatalogWriter, "submit_capture",
                        lambda self, cap: marks.append((cap.vtime_ns, cap.provisional)) or submit(self, cap))
    rr = str(tmp_path / "c.rr")
    opts = parse_args(["-kernel", guests["cpuloop"], "-serial", "none", "-snapshots", policy, "-icount",
                       f"shift=7,rr=record,rrfile={rr},rrsnapshot=init"])
    session = Session(opts, out=io.BytesIO(), stdin_fd=None)
    stop = session.run(None)
    session.close(stop.status, stop.reason)
    periodic = marks[1:]  # after the initial snapshot
    assert len(periodic) > 30
    if not held:
        assert not any(p for _, p in periodic)
        return
    firsts = {}
    for vtime, provisional in periodic:
        firsts.setdefault(vtime // 100_000_000, (vtime, provisional))
    assert all(not p for _, p in firsts.values())
    assert sum(p for _, p in periodic) == len(periodic) - len(firsts)
    with Catalog.open_existing(rr + ".db") as c:  # and the file holds what the policy keeps
        assert to_delete(c.list(), max(v for v, _ in periodic), DEFAULT_TIERS) == []


def test_recordings_keep_the_coarse_tier_and_replays_add_the_dense_one(guests, tmp_path):
    """By default a recording takes one snapshot per 100 ms (and its initial one); a replay of
    it adds the 10 ms tier within a second of where it is."""
    rr = str(tmp_path / "c.rr")
    record(guests["cpuloop"], rr)
    with Catalog.open_existing(rr + ".db") as c:
        recorded = [i.vtime_ns for i in c.list() if i.kind == "periodic"]
    assert len(recorded) >= 4
    assert len({v // 100_000_000 for v in recorded}) == len(recorded)
    assert all(v % 100_000_000 <= 25_000_000 for v in recorded)
    rep = run_urr("-kernel", guests["cpuloop"], "-icount", f"shift=7,rr=replay,rrfile={rr},rrsnapshot=init")
    assert rep.status == 33, rep.err
    with Catalog.open_existing(rr + ".db") as c:
        replayed = [i.vtime_ns for i in c.list() if i.kind == "periodic"]
    end_ns = max(replayed)
    near = [v for v in replayed if end_ns - v <= 1_000_000_000]
    assert len(near) > 50  # every 10 ms of the last second


def test_foreign_catalog_is_refused(guests, tmp_path):
    a, b = str(tmp_path / "a.rr"), str(tmp_path / "b.rr")
    record(guests["hello"], a)
    record(guests["hello"], b)
    shutil.copy(b + ".db", a + ".db")
    for suffix in ("-wal", "-shm"):
        if os.path.exists(a + ".db" + suffix):
            os.remove(a + ".db" + suffix)
    r = run_urr("-kernel", guests["hello"], "-icount", f"shift=7,rr=replay,rrfile={a},rrsnapshot=init")
    assert r.status == 2 and "belongs to another recording" in r.err


def test_corrupt_page_is_reported_not_loaded(guests, tmp_path):
    """A restore reads only the pages that differ from the machine's RAM: corrupting one that a
    later snapshot holds and a freshly booted guest does not is reported when it is needed."""
    rr = str(tmp_path / "t.rr")
    record(guests["ticks"], rr)
    with Catalog.open_existing(rr + ".db") as c:
        late = c.list()[-1]
        boot = set(c.load("init").pages.values())
        h = next(h for h in c.load(late.name).pages.values() if h not in boot)
    db = sqlite3.connect(rr + ".db")
    (data,) = db.execute("SELECT data FROM blobs WHERE hash = ?", (h,)).fetchone()
    db.execute("UPDATE blobs SET data = ? WHERE hash = ?", (bytes(len(data)), h))
    db.commit()
    db.close()
    r = run_urr("-kernel", guests["ticks"], "-icount", f"shift=7,rr=replay,rrfile={rr}", "-loadvm", late.name)
    assert r.status == 2
    assert f"page {h.hex()}" in r.err and "corrupt" in r.err


def test_named_snapshot_taken_in_replay_starts_a_later_replay(guests, tmp_path):
    """savevm in one replay, -loadvm in the next: it starts there, prints only what follows and
    ends in the recording's final state."""
    rr = str(tmp_path / "t.rr")
    rec = record(guests["ticks"], rr)
    session = replay_session(guests["ticks"], rr, "-snapshots", "off")
    session.run(400_000)
    at = session.machine.icount
    session.snapshots.take("mid", "named")
    session.close(None, "test")
    rep = run_urr("-kernel", guests["ticks"], "-icount", f"shift=7,rr=replay,rrfile={rr}", "-loadvm", "mid")
    assert rep.status == rec.status, rep.err
    assert rep.state() == rec.state()
    assert rep.out and rec.out.endswith(rep.out) and rep.out != rec.out  # the first line came before
    listing = subprocess.run([sys.executable, "-m", "snapshots.cli", "list", rr], capture_output=True,
                             text=True, cwd=ROOT)
    assert any(line.split()[:5] == ["mid", str(at), f"{(at << 7) / 1e9:.3f}", "s", "named"]
               for line in listing.stdout.splitlines()), listing.stdout


def test_a_replay_keeps_recent_content_only_once_a_debugger_will_restore(guests, tmp_path, monkeypatch):
    """A replay nobody debugs never restores, so it keeps no copies of what it captures; a
    Timeline over it says it will, and a reverse step near where it works then reads no page
    from the catalog. A session started for a debugger (-debugger, -gdb) says so itself."""
    from debugger.timeline import Timeline
    rr = str(tmp_path / "c.rr")
    record(guests["cpuloop"], rr, "-snapshots", "off")
    session = replay_session(guests["cpuloop"], rr)
    session.run(1_000_000)
    snaps = session.snapshots
    assert len(snaps.infos) > 5 and not snaps.recent and not snaps.recent_nodes
    timeline = Timeline(session.machine, snaps, True)
    timeline.seek(1_500_000)
    assert snaps.recent and snaps.recent_nodes
    read = []
    for name in ("get_blob", "get_blobs"):
        real = getattr(snaps.catalog, name)
        monkeypatch.setattr(snaps.catalog, name, lambda h, real=real: read.append(h) or real(h))
    timeline.reverse_stepi()
    assert timeline.machine.icount == 1_499_999 and read == []
    session.close(None, "test")
    debugged = replay_session(guests["cpuloop"], rr, "-debugger")  # told before it restores "init"
    debugged.run(2_500_000)  # past where the first replay went: snapshots of its own
    assert debugged.snapshots.recent and debugged.snapshots.recent_nodes
    debugged.close(None, "test")


def test_a_replay_nobody_debugs_takes_only_the_snapshots_it_keeps(guests, tmp_path, monkeypatch):
    """A replay runs to its log's end unless a debugger stops it, so it does not take the dense
    snapshots the policy deletes by then; its catalog ends as that of a replay that took them
    all (one a debugger could stop anywhere)."""
    from snapshots.writer import CatalogWriter
    monkeypatch.setattr(CatalogWriter, "behind", lambda self: False)  # the host's pace: not compared
    rr = str(tmp_path / "c.rr")
    record(guests["cpuloop"], rr, "-snapshots", "off")
    shutil.copy(rr, tmp_path / "d.rr")
    shutil.copy(rr + ".db", tmp_path / "d.rr.db")
    taken, kept = [], []
    for path, attended in ((rr, False), (str(tmp_path / "d.rr"), True)):
        session = replay_session(guests["cpuloop"], path)
        if attended:
            session.snapshots.expect_restores()
        assert session.run().reason == "exit"
        snaps = session.snapshots
        taken.append((snaps.writer.submitted, snaps.unneeded))
        assert snaps.by_icount()[0] == sorted(snaps.infos.values(), key=lambda i: i.icount)  # kept in order
        session.close(None, "test")
        with Catalog.open_existing(path + ".db") as c:
            kept.append(sorted(i.icount for i in c.list() if i.kind == "periodic"))
    assert kept[0] == kept[1] and len(kept[0]) > 100
    (unattended, unneeded), (debugged, none) = taken
    assert debugged > 500 and none == 0
    assert unattended < len(kept[0]) + 5 and unattended + unneeded == debugged


def test_replaying_a_stretch_again_takes_no_second_snapshot_per_grid_point(guests, tmp_path):
    """Seeks and reverse scans replay stretches again, stopping at other places: the snapshots
    they meet are reused, not taken twice a few instructions apart."""
    rr = str(tmp_path / "c.rr")
    record(guests["cpuloop"], rr, "-snapshots", "off")
    session = replay_session(guests["cpuloop"], rr)
    snaps = session.snapshots
    session.run(2_000_000)
    first = {i.icount for i in snaps.infos.values() if i.kind == "periodic"}
    snaps.restore("init")
    target = 0
    while target < 2_000_000:  # the same stretch in odd steps: slice boundaries fall elsewhere
        target += 33_331
        session.run(target)
    periodic = [i.icount for i in snaps.infos.values() if i.kind == "periodic"]
    grid = [icount // snaps.interval for icount in periodic]
    assert len(first) >= 20 and len(grid) == len(set(grid))
    assert set(periodic) >= first
    session.close(None, "test")


def test_a_big_snapshot_waits_while_a_forked_copy_still_feeds_the_writer(guests, tmp_path, monkeypatch):
    """Within the coarsest tier's interval after a snapshot whose content a forked copy feeds
    the writer, a periodic snapshot that would fork again is skipped while a copy still feeds
    (the next one holds the changes, as when the writer is behind), so a burst of writing forks
    about once per coarse interval; small ones are taken."""
    rr = str(tmp_path / "c.rr")
    record(guests["cpuloop"], rr, "-m", "64M", "-snapshots", "off")
    session = replay_session(guests["cpuloop"], rr, "-m", "64M")
    snaps, m = session.snapshots, session.machine
    session.run(200_000)
    monkeypatch.setattr(snaps.writer, "feeding", lambda: True)
    free = (m.ram.size // 2) // 4096  # pages the guest does not use

    def write_burst(first: int) -> None:  # 8 MiB: more than is worth copying through the ring
        for i in range(first, first + 2048):
            m.ram.write(i * 4096, i.to_bytes(8, "little"))

    write_burst(free)
    taken = len(snaps.infos)
    session.run(m.icount + 2 * snaps.interval)  # none big lately: taken although a copy feeds
    assert len(snaps.infos) > taken and snaps.skipped == 0
    write_burst(free + 2048)
    taken = len(snaps.infos)
    session.run(m.icount + 4 * snaps.interval)
    assert len(snaps.infos) == taken and snaps.skipped >= 3
    monkeypatch.setattr(snaps.writer, "feeding", lambda: False)
    session.run(m.icount + 2 * snaps.interval)
    assert len(snaps.infos) > taken  # the copy gone: the snapshot holding the changes is taken
    newest = max(snaps.infos.values(), key=lambda i: i.icount)
    snaps.restore(newest.name)
    assert m.ram.read((free + 2048) * 4096, 8) == (free + 2048).to_bytes(8, "little")
    monkeypatch.setattr(snaps.writer, "feeding", lambda: True)
    skipped, taken = snaps.skipped, len(snaps.infos)
    session.run(m.icount + 3 * snaps.interval)  # the guest's own few pages: not big, taken
    assert snaps.skipped == skipped and len(snaps.infos) > taken
    session.close(None, "test")


@pytest.mark.parametrize("column,tamper", [
    ("devices", lambda d: d["board"].pop("pit")),
    ("devices", lambda d: d.update(timers=[1, 2])),
    ("cpu", lambda c: c.update(rax="not a number")),
    ("cpu", lambda c: c.pop("gdtr")),
    ("log_pos", lambda p: p.update(chunk=10**6)),
])
def test_a_state_of_the_wrong_shape_is_refused_in_one_line(guests, tmp_path, column, tamper):
    """Catalog rows are checked as content, not as meaning: a tampered state that no longer fits
    the machine is reported naming the snapshot, never a traceback."""
    rr = str(tmp_path / "t.rr")
    record(guests["ticks"], rr)
    db = sqlite3.connect(rr + ".db")
    state = json.loads(db.execute(f"SELECT {column} FROM snapshots WHERE name = 'init'").fetchone()[0])
    tamper(state)
    db.execute(f"UPDATE snapshots SET {column} = ? WHERE name = 'init'", (json.dumps(state),))
    db.commit()
    db.close()
    r = run_urr("-kernel", guests["ticks"], "-icount", f"shift=7,rr=replay,rrfile={rr},rrsnapshot=init")
    assert r.status == 2 and "Traceback" not in r.err, r.err
    assert r.err.startswith("urr: snapshot 'init' in ") and "is corrupt" in r.err
    assert len(r.err.splitlines()) == 1


def test_unknown_snapshot_name(guests, tmp_path):
    rr = str(tmp_path / "h.rr")
    record(guests["hello"], rr)
    r = run_urr("-kernel", guests["hello"], "-icount", f"shift=7,rr=replay,rrfile={rr}", "-loadvm", "nope")
    assert r.status == 2 and "no snapshot named 'nope'" in r.err
    with pytest.raises(SessionError):
        replay_session(guests["hello"], rr, "-loadvm", "nope")


KILLER = """
import sys, os
from snapshots.catalog import Catalog, Snapshot, content_hash
c = Catalog.open(sys.argv[1], "rec", create=True)
i = 0
while True:
    contents = [os.urandom(4096) for _ in range(2000)]
    blobs = {content_hash(d): d for d in contents}
    pages = dict(enumerate(blobs))
    c.save(Snapshot(f"s{i}", "periodic", i, i, {"rip": i}, {}, {}, pages, {}, 1 << 24), blobs)
    print(i, flush=True)
    i += 1
"""


def test_catalog_survives_kill_during_write(tmp_path):
    path = str(tmp_path / "k.db")
    proc = subprocess.Popen([sys.executable, "-c", KILLER, path], cwd=ROOT, stdout=subprocess.PIPE)
    for _ in range(3):
        proc.stdout.readline()
    time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    catalog = Catalog.open(path, "rec", create=False)
    infos = catalog.list()
    assert len(infos) >= 3
    for info in infos:
        snap = catalog.load(info.name)
        assert len(snap.pages) == 2000
        for h in list(snap.pages.values())[:50]:
            assert len(catalog.get_blob(h)) == 4096  # verified against its hash
    with pytest.raises(CatalogError, match="belongs to another recording"):
        Catalog.open(path, "other", create=False)
