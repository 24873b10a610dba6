"""Branching a replay into a new recording (urr.branch): from the command line, from a Timeline
at any position, from real GDB and from the console.

Branch points and inputs are drawn from a seeded generator. Every branch is replayed twice and
must end in the state its recording ended in; the parent's log and catalog must be byte for byte
what they were before."""
from __future__ import annotations

import hashlib
import io
import os
import random
import re
import shutil
import subprocess
import sys
import time

import pytest

from debugger.launch import make_timeline
from replay import log as L
from replay.player import Player
from replay.time import SOURCES
from snapshots.catalog import Catalog
from tests.conftest import ROOT, Result, run_urr
from tests.replays import Recording, recorded  # noqa: F401  (recorded is a fixture)
from urr.options import UsageError, parse_args
from urr.session import Session

SEED = 15
ECHO_LINES = (b"one\n", b"two\n", b"three\n")


def digests(*paths: str) -> dict[str, str]:
    """path -> sha256 of the file (None if there is none, or it is empty: SQLite makes and
    removes an empty -wal as connections come and go, which changes no content)."""
    out = {}
    for path in paths:
        if os.path.exists(path) and os.path.getsize(path):
            with open(path, "rb") as f:
                out[path] = hashlib.sha256(f.read()).hexdigest()
        else:
            out[path] = None
    return out


def parent_files(rrfile: str) -> list[str]:
    return [rrfile, f"{rrfile}.db", f"{rrfile}.db-wal"]


def replay(kernel: str, rrfile: str, *extra: str) -> Result:
    return run_urr("-kernel", kernel, "-serial", "stdio", "-icount", f"shift=7,rr=replay,rrfile={rrfile}", *extra)


def host_dependent(rrfile: str) -> bool:
    """Whether the recording took anything from the host that a branch takes anew (serial input,
    the TSC or the RTC, random numbers, disk data)."""
    for rec in Player(L.LogReader(rrfile)).records:
        if rec.kind in (L.CHAR, L.RANDOM, L.BLOCK) or (
                rec.kind == L.CLOCK and rec.fields[0] in (SOURCES["tsc"], SOURCES["rtc"])):
            return True
    return False


@pytest.fixture(scope="module")
def echo_parent(guests, tmp_path_factory) -> Recording:
    """The echo guest recorded with its input lines a host second apart, once it is ready for
    them, so that periodic snapshots fall between them."""
    rrfile = str(tmp_path_factory.mktemp("echo-parent") / "parent.rr")
    proc = subprocess.Popen([sys.executable, "-m", "urr", "-display", "none", "-kernel", guests["echo"],
                             "-serial", "stdio", "-icount", f"shift=7,rr=record,rrfile={rrfile},rrsnapshot=init"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    ready = proc.stdout.readline()  # input sent before the guest is ready may be lost (as on hardware)
    assert ready.startswith(b"echo ready"), ready
    for line in ECHO_LINES + (b"quit\n",):
        time.sleep(1.0)
        proc.stdin.write(line)
        proc.stdin.flush()
    out, err = proc.communicate(timeout=120)
    result = Result(proc.returncode, ready + out, err.decode())
    assert result.status == 33, result.err
    icount = int(re.search(r"recorded (\d+) instructions", result.note("recorded")).group(1))
    return Recording("echo", guests["echo"], rrfile, icount, result.status, out)


def test_cli_branches_of_echo_take_new_input_and_replay_identically(echo_parent, tmp_path):
    """Branches from seeded random snapshots taken between the parent's first input and its
    last, each fed a different line: the guest echoes the new line, the branch replays twice to its recorded state,
    `urr-snap info` names the parent, and the parent's files do not change."""
    rng = random.Random(SEED)
    parent = echo_parent.rrfile
    inputs = [r.icount for r in Player(L.LogReader(parent)).records if r.kind == L.CHAR]
    with Catalog.open_existing(f"{parent}.db") as catalog:
        candidates = sorted((i.name, i.icount) for i in catalog.list() if inputs[0] <= i.icount < inputs[-1])
    assert len(candidates) >= 2, candidates
    before = digests(*parent_files(parent))
    for n, (name, icount) in enumerate(rng.sample(candidates, 2)):
        word = "".join(rng.choice("abcdefghij") for _ in range(rng.randrange(3, 9)))
        new = str(tmp_path / f"branch{n}.rr")
        rec = run_urr("-kernel", echo_parent.kernel, "-serial", "stdio", "-icount", f"shift=7,rr=record,rrfile={new}",
                      "-loadvm", name, "-branch-from", parent, stdin=f"{word}\nquit\n".encode())
        assert rec.status == 33, rec.err
        assert f"\n{word.upper()}\r\n".encode() in b"\n" + rec.out, rec.out
        for _ in range(2):
            again = replay(echo_parent.kernel, new)
            assert (again.status, again.out, again.state()) == (rec.status, rec.out, rec.state()), again.err
        info = subprocess.run([sys.executable, "-m", "snapshots.cli", "info", new], capture_output=True,
                              text=True, cwd=ROOT)
        header = L.LogReader(new).config
        assert header["parent"]["recording_id"] == L.LogReader(parent).config["recording_id"]
        assert f"parent        branch of {parent} (recording {header['parent']['recording_id']}) at icount {icount}, " \
               f"from its snapshot '{name}'\n" in info.stdout, info.stdout + info.stderr
    assert digests(*parent_files(parent)) == before


def test_branches_at_random_positions_of_random_recordings(recorded, tmp_path):  # noqa: F811
    """A Timeline replaying a recording seeks to a random icount (back and forth), branches, and
    runs the branch to the guest's exit. The branch replays twice to the state it ended in; a
    guest that takes nothing from the host ends as its parent did; the clock guest, whose TSC
    goes on from the host's clock in a branch, still never sees it go back."""
    rng = random.Random(SEED + 1)
    for n, name in enumerate(rng.sample(["hello", "ticks", "clock", "corrupt", "calls"], 3)):
        rec = recorded(name)
        at, detour = rng.randrange(1, rec.icount), rng.randrange(1, rec.icount)
        before = digests(*parent_files(rec.rrfile))
        opts = parse_args(["-kernel", rec.kernel, "-serial", "none", "-snapshots", "off",
                           "-icount", f"shift=7,rr=replay,rrfile={rec.rrfile},rrsnapshot=init"])
        session = Session(opts, out=io.BytesIO(), stdin_fd=None)
        timeline = make_timeline(session)
        new = str(tmp_path / f"{name}-{n}.rr")
        try:
            timeline.seek(detour)
            timeline.seek(at)
            said = timeline.branch(new)
            assert said.startswith(f"branched at icount {timeline.icount} into {new}"), said
            stop = timeline.cont()
            assert (stop.reason, stop.exit_status) == ("exited", rec.status), stop
            state, end = session.state_hash(), timeline.icount
        finally:
            session.close(timeline.exit_status, "test")
        assert digests(*parent_files(rec.rrfile)) == before, name
        for _ in range(2):
            again = replay(rec.kernel, new, "-serial", "none")
            assert again.status == rec.status and again.state() == state, again.err
            assert f"replayed {end} instructions" in again.note("replayed")
        if not host_dependent(rec.rrfile):
            assert state == rec.straight_states([rec.icount])[rec.icount][1], name


def test_branches_of_a_disk_recording_read_the_image_live(guests, disk_image, tmp_path):
    """The disk guest writes, reads back and verifies sectors. Branched at random positions of
    its replay (started with -drive, as branching needs), it passes: the overlay of what it had
    written goes on in the branch, the rest is read from the image; without -drive the branch
    is refused. From the command line the overlay comes from the snapshot."""
    rrfile = str(tmp_path / "disk.rr")
    drive = ["-drive", f"file={disk_image},format=raw"]
    rec = run_urr("-kernel", guests["disk"], *drive, "-serial", "none", "-snapshots", "1ms:100ms,10ms",
                  "-icount", f"shift=7,rr=record,rrfile={rrfile},rrsnapshot=init")
    assert rec.status == 33, rec.err
    icount = int(re.search(r"recorded (\d+) instructions", rec.note("recorded")).group(1))
    before = digests(*parent_files(rrfile), disk_image)
    rng = random.Random(SEED + 2)
    for n, with_drive in enumerate((False, True, True)):
        opts = parse_args(["-kernel", guests["disk"], "-serial", "none", "-snapshots", "off",
                           *(drive if with_drive else []), "-icount", f"shift=7,rr=replay,rrfile={rrfile},rrsnapshot=init"])
        session = Session(opts, out=io.BytesIO(), stdin_fd=None)
        timeline = make_timeline(session)
        new = str(tmp_path / f"disk-branch{n}.rr")
        try:
            timeline.seek(rng.randrange(1, icount))
            if not with_drive:
                with pytest.raises(ValueError, match="the recording has a disk: a branch reads it live"):
                    timeline.branch(new)
                assert not os.path.exists(new) and not os.path.exists(f"{new}.db")
                continue
            timeline.branch(new)
            stop = timeline.cont()
            assert (stop.reason, stop.exit_status) == ("exited", 33), stop
            state = session.state_hash()
        finally:
            session.close(timeline.exit_status, "test")
        again = replay(guests["disk"], new, "-serial", "none")
        assert again.status == 33 and again.state() == state, again.err
    with Catalog.open_existing(f"{rrfile}.db") as catalog:
        name = max((i for i in catalog.list() if i.icount < icount), key=lambda i: i.icount).name
    new = str(tmp_path / "disk-cli.rr")
    r = run_urr("-kernel", guests["disk"], "-serial", "none", "-icount", f"shift=7,rr=record,rrfile={new}",
                "-loadvm", name, "-branch-from", rrfile)
    assert r.status == 2 and "it was recorded with -drive with its image" in r.err, r.err
    r = run_urr("-kernel", guests["disk"], *drive, "-serial", "none", "-icount", f"shift=7,rr=record,rrfile={new}",
                "-loadvm", name, "-branch-from", rrfile)
    assert r.status == 33, r.err
    assert replay(guests["disk"], new, "-serial", "none").state() == r.state()
    assert digests(*parent_files(rrfile), disk_image) == before


def test_gdb_patch_then_branch_fixes_corrupt(recorded, tmp_path):  # noqa: F811
    """The manual's worked example, through real GDB: find the corrupting store backwards, go
    back to the call before it, patch the bound in journal_append's code with `set var`, branch,
    continue: the guest passes. The branch replays on its own, twice alike; the parent's files
    are untouched."""
    from tests.test_gdb_e2e import GDB, SESSION, _listening_port

    if GDB is None:
        pytest.skip("gdb is not installed")
    rec = recorded("corrupt")
    before = digests(*parent_files(rec.rrfile))
    new = str(tmp_path / "fixed.rr")
    # At journal_append's entry, $pc + 20 is the imm32 of the bound's `cmp $0x8001,%eax` at +19.
    compare = rec.elf.addr("journal_append") + 19
    assert [i.op_str for i in rec.elf.code("journal_append") if i.address == compare] == ["eax, 0x8001"]
    err_path = str(tmp_path / "urr.err")
    with open(err_path, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "urr", "-display", "none", "-serial", "stdio",
                                 "-snapshots", "off", *rec.urr_args(), "-gdb", "tcp::0", "-S"], cwd=ROOT,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
    try:
        port = _listening_port(proc, err_path)
        commands = ["break report_corruption", "continue", "watch total_checks", "reverse-continue",
                    "delete", "break journal_append", "reverse-continue", "reverse-continue",
                    "print journal_next", "set var *(unsigned int *)($pc + 20) = 0x8000", "delete",
                    f"monitor replay_branch {rec.rrfile}", "monitor replay_branch",
                    f"monitor replay_branch {new}", "monitor info replay", "reverse-stepi", "continue"]
        argv = [GDB, "-nx", "-batch", "-ex", f"file {rec.kernel}", "-ex", f"target remote 127.0.0.1:{port}"]
        for command in commands:
            argv += ["-ex", command]
        gdb = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, timeout=SESSION)
        out, _ = proc.communicate(timeout=SESSION)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "$1 = 32767" in gdb.stdout, gdb.stdout
    assert f"error: cannot branch into {rec.rrfile}: it is the parent recording's own file" in gdb.stdout
    assert "error: usage: replay_branch [-f] NEWFILE" in gdb.stdout
    m = re.search(rf"^branched at icount (\d+) into {re.escape(new)}, recording from here", gdb.stdout, re.M)
    assert m, gdb.stdout
    assert f"Recording position: icount {m.group(1)}" in gdb.stdout
    assert (f"urr: reverse execution needs a replay: from icount {m.group(1)} this run records into {new}, "
            f"a branch of {rec.rrfile} (replay either to go back)") in gdb.stdout.splitlines(), gdb.stdout
    assert "exited with code 041]" in gdb.stdout, gdb.stdout  # 0x10 -> (0x10 << 1) | 1 = 33
    assert proc.returncode == 33
    assert b"no corruption after 6000 ticks" in out, out
    assert digests(*parent_files(rec.rrfile)) == before
    first, second = replay(rec.kernel, new), replay(rec.kernel, new, "-snapshots", "off")
    assert first.status == second.status == 33, first.err + second.err
    assert first.state() == second.state()
    assert b"no corruption after 6000 ticks" in first.out and b"corruption detected" not in first.out
    assert L.LogReader(new).config["parent"]["icount"] == int(m.group(1))
    for command, expected in ((["verify"], "all snapshots match their replay"),
                              (["hits", "report_corruption", "--kernel", rec.kernel], "0 executions of ")):
        r = subprocess.run([sys.executable, "-m", "snapshots.cli", command[0], new, *command[1:], "--jobs", "2"],
                           capture_output=True, text=True, cwd=ROOT)
        assert r.returncode == 0 and expected in r.stdout, r.stdout + r.stderr  # whole-history work starts at `branch`


def test_console_branch_needs_consent_and_refuses_an_exited_guest(recorded, tmp_path):  # noqa: F811
    rec = recorded("hello")
    new = tmp_path / "console.rr"
    new.write_bytes(b"precious")
    commands = (f"stepi 50\nbranch {new}\nbranch\nbranch -x {new}\nbranch -f {new}\nreverse-stepi\n"
                "continue\nquit\n").encode()
    r = run_urr(*rec.urr_args(), "-serial", "none", "-debugger", stdin=commands)
    out = r.out.decode()
    assert f"error: {new} exists: give -f (monitor, console) or -overwrite (command line) to replace it\n" in out
    assert out.count("error: usage: branch [-f] NEWFILE\n") == 2, out
    assert re.search(rf"^\(urr\) branched at icount 50 into {re.escape(str(new))}, recording from here", out, re.M), out
    assert (f"error: reverse execution needs a replay: from icount 50 this run records into {new}, a branch of "
            f"{rec.rrfile} (replay either to go back)\n") in out, out
    assert f"guest exited with status {rec.status}\nicount {rec.icount} " in out, out
    assert r.status == rec.status, r.err
    again = replay(rec.kernel, str(new))
    assert again.status == rec.status and f"replayed {rec.icount} instructions" in again.note("replayed")

    exited = tmp_path / "exited.rr"
    r = run_urr(*rec.urr_args(), "-serial", "none", "-debugger", stdin=f"continue\nbranch {exited}\n".encode())
    assert f"error: the guest has exited at icount {rec.icount}: go back before its exit to branch" in r.out.decode()
    assert not exited.exists() and not os.path.exists(f"{exited}.db")


@pytest.mark.parametrize("case", ["kernel", "snapshot", "exists", "parent", "no-parent"])
def test_cli_bad_branches_are_one_line_and_write_nothing(recorded, tmp_path, case):  # noqa: F811
    rec = recorded("ticks")
    other = recorded("hello")
    new = str(tmp_path / "new.rr")
    kernel, snapshot, target, parent, extra = rec.kernel, "init", new, rec.rrfile, []
    if case == "kernel":
        kernel = other.kernel
    elif case == "snapshot":
        snapshot = "nowhere"
    elif case == "exists":
        with open(new, "wb") as f:
            f.write(b"keep me")
    elif case == "parent":
        target, extra = rec.rrfile, ["-overwrite"]
    else:
        parent = str(tmp_path / "missing.rr")
    before = digests(*parent_files(rec.rrfile), new, f"{new}.db")
    r = run_urr("-kernel", kernel, "-serial", "none", "-icount", f"shift=7,rr=record,rrfile={target}",
                "-loadvm", snapshot, "-branch-from", parent, *extra)
    assert r.status == 2 and len(r.err.splitlines()) == 1 and r.err.startswith("urr: "), r.err
    expected = {"kernel": "differs from its kernel", "snapshot": "no snapshot named 'nowhere'",
                "exists": "exists: give -f", "parent": "it is the parent recording's own file",
                "no-parent": "cannot read rrfile"}[case]
    assert expected in r.err
    assert digests(*parent_files(rec.rrfile), new, f"{new}.db") == before


def test_cli_branch_from_a_snapshot_of_the_exit_is_refused(recorded, tmp_path):  # noqa: F811
    rec = recorded("hello")
    parent = str(tmp_path / "hello.rr")
    shutil.copy(rec.rrfile, parent)
    shutil.copy(f"{rec.rrfile}.db", f"{parent}.db")
    r = run_urr("-kernel", rec.kernel, "-serial", "none", "-debugger",
                "-icount", f"shift=7,rr=replay,rrfile={parent},rrsnapshot=init", stdin=b"continue\nsavevm done\n")
    assert f"snapshot done at icount {rec.icount}" in r.out.decode(), r.out
    before = digests(*parent_files(parent))
    new = str(tmp_path / "new.rr")
    r = run_urr("-kernel", rec.kernel, "-serial", "none", "-icount", f"shift=7,rr=record,rrfile={new}",
                "-loadvm", "done", "-branch-from", parent)
    assert r.status == 2 and r.err == f"urr: cannot branch from {parent}: the guest has exited at its snapshot 'done'\n"
    assert not os.path.exists(new) and not os.path.exists(f"{new}.db")
    assert digests(*parent_files(parent)) == before


@pytest.mark.parametrize("argv, message", [
    (["-icount", "rr=record,rrfile=n.rr", "-branch-from", "p.rr"], "-branch-from OLD.rr needs"),
    (["-icount", "rr=replay,rrfile=n.rr", "-loadvm", "x", "-branch-from", "p.rr"], "-branch-from OLD.rr needs"),
    (["-icount", "rr=record,rrfile=n.rr,rrsnapshot=s", "-loadvm", "x", "-branch-from", "p.rr"], "rrsnapshot="),
    (["-icount", "rr=record,rrfile=n.rr", "-overwrite"], "-overwrite goes with -branch-from"),
    (["-icount", "rr=record,rrfile=n.rr", "-loadvm", "x"], "-loadvm needs"),
])
def test_branch_options(argv, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        parse_args(["-kernel", "k.elf", *argv])
