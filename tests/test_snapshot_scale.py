"""Snapshots at scale: a guest that touches most of 1 GiB records and replays with snapshots,
snapshots taken across restores (page trees built on a restored tree) restore to the state a
replay reaches, and a writer killed at any moment leaves a catalog whose every snapshot loads
whole."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import io
import time

from snapshots.catalog import Catalog
from tests.conftest import ROOT, run_urr
from urr.options import parse_args
from urr.session import Session


def snap(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snapshots.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=600)


def test_a_1gib_guest_records_and_replays_with_snapshots(guests, tmp_path):
    rr = str(tmp_path / "big.rr")
    icount = ["-icount", f"shift=7,rr=record,rrfile={rr},rrsnapshot=init"]
    rec = run_urr("-kernel", guests["bigmem1g"], "-m", "1G", *icount, timeout=600)
    assert rec.status == 33, rec.err
    rep = run_urr("-kernel", guests["bigmem1g"], "-m", "1G", "-icount",
                  f"shift=7,rr=replay,rrfile={rr},rrsnapshot=init", timeout=600)
    assert rep.status == rec.status and rep.state() == rec.state(), rep.err
    with Catalog.open_existing(rr + ".db") as c:
        infos = c.list()
        assert len(infos) > 3
        assert max(i.pages for i in infos) > 240_000  # most of the 1 GiB in use


def test_snapshots_taken_across_random_restores_match_their_replay(guests, tmp_path):
    """A replay that jumps back and forth (each jump a restore that rewrites only the pages that
    differ) takes snapshots on restored trees; `urr-snap verify` then restores every snapshot of
    the catalog and replays to the next: all must match."""
    for name, seed in (("cpuloop", 1), ("ticks", 2), ("corrupt", 3)):
        rr = str(tmp_path / f"{name}.rr")
        rec = run_urr("-kernel", guests[name], "-icount", f"shift=7,rr=record,rrfile={rr},rrsnapshot=init")
        assert rec.status % 2 == 1, rec.err
        end = int(rec.note("recorded").split()[2])
        session = Session(parse_args(["-kernel", guests[name], "-serial", "none", "-icount",
                                      f"shift=7,rr=replay,rrfile={rr},rrsnapshot=init",
                                      "-snapshots", "10ms:1s,100ms"]), out=io.BytesIO(), stdin_fd=None)
        rng = random.Random(seed)
        for _ in range(6):
            target = rng.randrange(end)
            if target < session.machine.icount:
                session.snapshots.restore(session.snapshots.nearest(target).name)
            session.run(target)
        session.close(None, "test")
        r = snap("verify", rr)
        assert r.returncode == 0, (name, r.stderr)


def _writer_pid(parent: int) -> int | None:
    try:
        with open(f"/proc/{parent}/task/{parent}/children") as f:
            children = [int(p) for p in f.read().split()]
    except OSError:
        return None
    return children[0] if children else None


def test_a_writer_killed_at_any_moment_leaves_whole_snapshots(guests, tmp_path):
    """Kill the catalog writer (the recording's child process) at random moments: whatever the
    file holds is consistent, and every snapshot in it reaches all its tree nodes and content."""
    rng = random.Random(12)
    # bigmem16 writes 16 MiB at its start: its first snapshots are fed to the writer by forked
    # copies of the emulator (snapshots/writer.py), which the kill may find at work.
    for n, (guest, ram, wait) in enumerate([("cpuloop", "16M", 1.0), ("bigmem16", "64M", 0.6),
                                            ("cpuloop", "16M", 1.0), ("bigmem16", "64M", 0.6)]):
        rr = str(tmp_path / f"k{n}.rr")
        proc = subprocess.Popen([sys.executable, "-m", "urr", "-display", "none", "-serial", "none",
                                 "-kernel", guests[guest], "-m", ram, "-icount",
                                 f"shift=7,rr=record,rrfile={rr},rrsnapshot=init",
                                 "-snapshots", "10ms:1s,100ms"],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while (pid := _writer_pid(proc.pid)) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pid is not None
        time.sleep(rng.uniform(0.2, wait))
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # the run ended first
        err = proc.communicate(timeout=120)[1].decode()
        assert proc.returncode in (2, 33), err
        if proc.returncode == 2:
            assert "snapshot writer" in err and "Traceback" not in err
        with Catalog.open_existing(rr + ".db") as c:
            infos = c.list()
            assert infos and infos[0].name == "init"
            for info in infos:
                s = c.load(info.name)
                assert len(dict(s.pages)) == info.pages
                for h in set(s.pages.values()):
                    c.get_blob(h)  # present, and verified against its hash


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                kids = {int(k) for k in f.read().split()}
        except OSError:
            continue
        found |= kids
        todo += kids
    return found


def test_an_emulator_killed_while_its_snapshots_are_fed_leaves_no_process_behind(guests, tmp_path):
    """SIGKILL the recording at random moments of its start, when bigmem16's first snapshots
    are fed to the writer by forked copies: the writer sees the emulator gone and ends, and so
    do the copies (none holds a pipe that keeps another waiting), leaving whole snapshots."""
    rng = random.Random(5)
    for n in range(2):
        rr = str(tmp_path / f"e{n}.rr")
        proc = subprocess.Popen([sys.executable, "-m", "urr", "-display", "none", "-serial", "none",
                                 "-kernel", guests["bigmem16"], "-m", "64M", "-icount",
                                 f"shift=7,rr=record,rrfile={rr},rrsnapshot=init",
                                 "-snapshots", "1ms:100ms,10ms:1s,100ms"],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seen: set[int] = set()
        deadline = time.monotonic() + rng.uniform(0.5, 2.0)
        while time.monotonic() < deadline or not seen:
            seen |= _descendants(proc.pid)
            time.sleep(0.01)
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 60
        while (alive := [p for p in seen if os.path.exists(f"/proc/{p}")
                         and open(f"/proc/{p}/stat").read().split(")")[1].split()[0] != "Z"]) \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive, alive
        with Catalog.open_existing(rr + ".db") as c:
            for info in c.list():
                s = c.load(info.name)
                assert len(dict(s.pages)) == info.pages


_PEAK_RSS = """
import os, subprocess, sys
proc = subprocess.Popen([sys.executable, "-m", "urr", *sys.argv[1:]],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
_, status, usage = os.wait4(proc.pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""


def _peak_rss_mib(args: list[str]) -> tuple[int, float]:
    """Run urr; its exit status and the peak resident memory of it and its children (MiB).
    Started by a fresh, small interpreter: a process's peak counts the memory of the process
    it was started from, up to its exec (pytest's, 400 MiB late in a run)."""
    out = subprocess.run([sys.executable, "-c", _PEAK_RSS, "-display", "none", "-serial", "none",
                          *args],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    status, kib = out.stdout.split()
    return int(status), int(kib) / 1024


def test_memory_in_use_follows_what_the_guest_touches_not_its_ram_size(guests, tmp_path):
    """The peak resident memory of a recording and of its replay, both taking the densest
    snapshots, stays within a fixed allowance over what the guest touches, however big its
    RAM: 2 GiB of it that ticks leaves untouched costs nothing (RAM is anonymous memory, the
    snapshot caches are bounded). A guard: a test run once grew a ticks process to 20 GB."""
    allowance = 256  # MiB: the interpreter, Unicorn, the snapshot caches (48 MiB at most)
    for guest, ram, touched in (("ticks", "2G", 0), ("bigmem16", "64M", 16)):
        rr = str(tmp_path / f"{guest}.rr")
        for mode in ("record", "replay"):
            status, peak = _peak_rss_mib(["-kernel", guests[guest], "-m", ram, "-snapshots",
                                          "1ms:100ms,10ms:1s,100ms", "-icount",
                                          f"shift=7,rr={mode},rrfile={rr},rrsnapshot=init"])
            assert status == 33, (guest, mode, status)
            assert peak < allowance + touched, (guest, mode, peak)
