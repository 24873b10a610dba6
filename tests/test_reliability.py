"""Nothing silent, nothing lost: forged and damaged logs, refused runs that leave files as they
were, incomplete recordings, and the same words for the same end in a recording and its replay."""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import sqlite3
import struct
from typing import Callable, Optional

import pytest

from replay import log as L
from tests.conftest import run_urr


def records_of(rr: str) -> tuple[dict, list[L.Record]]:
    reader = L.LogReader(rr)
    return reader.config, [r for c in reader.chunks() for r in c.records]


def rewrite_log(src: str, dst: str, edit: Callable[[L.Record], Optional[L.Record]] = lambda r: r,
                config: Optional[dict] = None, chunk_records: int = 0) -> None:
    """A copy of a log (valid checksums) with each record replaced by edit(record) (None drops
    it), a changed header, or a chunk every `chunk_records` records."""
    old_config, records = records_of(src)
    w = L.LogWriter(dst, old_config if config is None else config)
    last = 0
    for n, r in enumerate(records, 1):
        r = edit(r)
        if r is None:
            continue
        w.append(r.kind, r.icount, *r.fields)
        last = r.icount
        if chunk_records and n % chunk_records == 0:
            w.flush(last)
    w.close(last)


def digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture(scope="module")
def ticks(guests, tmp_path_factory):
    rr = str(tmp_path_factory.mktemp("rel") / "ticks.rr")
    rec = run_urr("-kernel", guests["ticks"], "-icount", f"shift=7,rr=record,rrfile={rr}", "-snapshots", "off")
    assert rec.status == 33, rec.err
    return rr


def replay(guests, rr: str, *extra: str, guest: str = "ticks"):
    return run_urr("-kernel", guests[guest], "-icount", f"shift=7,rr=replay,rrfile={rr}", "-snapshots", "off", *extra)


def one_line(r) -> str:
    assert "Traceback" not in r.err and len(r.err.strip().splitlines()) == 1, r.err
    return r.err.strip()


def test_a_forged_exit_status_is_a_divergence(guests, ticks, tmp_path):
    """The END record says another status: the guest's own exit no longer ends the replay
    silently with the guest's status; the log is checked."""
    bad = str(tmp_path / "bad.rr")
    rewrite_log(ticks, bad, lambda r: L.Record(r.kind, r.icount, (35, r.fields[1])) if r.kind == L.END else r)
    rep = replay(guests, bad)
    assert rep.status == 6, rep.err
    assert "the guest exited with status 33 where the recording ended with status 35 (exit)" in one_line(rep)


def test_an_exit_forged_before_the_guests_is_a_divergence(guests, ticks, tmp_path):
    _, records = records_of(ticks)
    end = records[-1]
    assert records[-2].kind == L.DIGEST  # of the final state, left out here
    where = records[-3].icount + 1  # a while before the guest's own exit

    def edit(r: L.Record) -> Optional[L.Record]:
        if r.kind == L.END:
            return L.Record(L.END, where, r.fields)
        return r if r.icount < where else None
    bad = str(tmp_path / "early.rr")
    rewrite_log(ticks, bad, edit)
    rep = replay(guests, bad)
    assert rep.status == 6, rep.err
    assert where < end.icount
    assert f"replay diverged at icount {where}: the recording's guest exited here with status 33" in one_line(rep)


def test_a_drive_the_recording_did_not_have_is_refused(guests, ticks, disk_image):
    rep = replay(guests, ticks, "-drive", f"file={disk_image},format=raw")
    assert rep.status == 2
    assert "recorded without a disk" in one_line(rep)


def test_a_cut_log_is_incomplete_not_success(guests, ticks, tmp_path):
    """The file ends inside its last chunk (a killed recording): the prefix replays, and the
    status says the recording was incomplete."""
    multi = str(tmp_path / "multi.rr")
    rewrite_log(ticks, multi, chunk_records=20)
    data = open(multi, "rb").read()
    cut = tmp_path / "cut.rr"
    cut.write_bytes(data[:len(data) * 2 // 3])
    rep = replay(guests, str(cut))
    assert rep.status == 8, rep.err
    assert "replay reached the end of an incomplete recording at icount" in rep.note("replay reached")


def test_a_damaged_chunk_length_mid_log_is_corruption(guests, ticks, tmp_path):
    """A flipped bit in a middle chunk's comp_len makes it run past the end of the file, as a
    torn last write would; complete chunks follow it, so it is damage, not an end."""
    multi = str(tmp_path / "multi.rr")
    rewrite_log(ticks, multi, chunk_records=20)
    reader = L.LogReader(multi)
    chunks = list(reader.chunks())
    assert len(chunks) >= 4
    middle = chunks[len(chunks) // 2].offset
    data = bytearray(open(multi, "rb").read())
    data[middle + 9] ^= 0x01  # comp_len's high byte (bytes 6-9): now 16 MiB past the end of the file
    bad = tmp_path / "flipped.rr"
    bad.write_bytes(bytes(data))
    rep = replay(guests, str(bad))
    assert rep.status == 2, rep.err
    assert f"the chunk at byte {middle} is damaged (complete chunks follow it" in one_line(rep)


def _with_header(src: str, dst, change: Callable[[dict], None]) -> None:
    """The log with its header JSON changed and its CRC made valid again."""
    data = open(src, "rb").read()
    n = struct.unpack_from("<I", data, 12)[0]
    config = json.loads(data[16:16 + n])
    change(config)
    dst.write_bytes(L.encode_header(config) + data[16 + n + 4:])


@pytest.mark.parametrize("change,message", [
    (lambda c: c.update(disk="yes"), "disk is neither null"),
    (lambda c: c.pop("recording_id"), "recording_id is not"),
    (lambda c: c.update(ram_size="16M"), "ram_size is not"),
    (lambda c: c.update(shift=[7]), "shift is not"),
])
def test_ill_typed_header_fields_are_refused(guests, ticks, tmp_path, change, message):
    bad = tmp_path / "typed.rr"
    _with_header(ticks, bad, change)
    rep = replay(guests, str(bad))
    assert rep.status == 2, rep.err
    assert message in one_line(rep)


def test_a_device_as_rrfile_is_refused(guests):
    rep = replay(guests, "/dev/zero")
    assert rep.status == 2
    assert "is not a regular file" in one_line(rep)


def _elf_damaged(src: str, dst, how: str) -> None:
    """A copy of an ELF kernel, truncated in the middle of its first segment ("truncated"), or
    with that segment's file offset moved past the end of the file ("offset")."""
    raw = bytearray(open(src, "rb").read())
    phoff, = struct.unpack_from("<Q", raw, 0x20)
    offset, = struct.unpack_from("<Q", raw, phoff + 8)  # the first program header's p_offset
    if how == "truncated":
        raw = raw[:offset + 16]
    else:
        struct.pack_into("<Q", raw, phoff + 8, len(raw) + 0x1000)
    dst.write_bytes(bytes(raw))


@pytest.mark.parametrize("how", ["truncated", "offset"])
def test_an_elf_whose_segment_is_not_in_the_file_is_refused(guests, tmp_path, how):
    """pyelftools reads a segment past the end of the file short, without an error: the kernel
    ran with the missing bytes as zeros."""
    bad = tmp_path / "bad.elf"
    _elf_damaged(guests["hello"], bad, how)
    r = run_urr("-kernel", str(bad), "-serial", "none")
    assert r.status == 2, r.err
    assert "is truncated or malformed: segment 0 (file offset" in one_line(r)


@pytest.mark.parametrize("option", ["-kernel", "-initrd"])
def test_a_device_as_kernel_or_module_is_refused(guests, option):
    """`-kernel /dev/zero` read until memory ran out."""
    args = ["-kernel", "/dev/zero"] if option == "-kernel" else ["-kernel", guests["boot"], "-initrd", "/dev/zero"]
    r = run_urr(*args, "-serial", "none", timeout=60)
    assert r.status == 2, r.err
    assert "/dev/zero: not a regular file" in one_line(r)


@pytest.mark.parametrize("bad", [["-snapshots", "bogus"], ["-serial", "file:/nonexistent/x"]])
def test_a_refused_record_leaves_the_recording_intact(guests, tmp_path, bad):
    rr = str(tmp_path / "t.rr")
    rec = run_urr("-kernel", guests["hello"], "-icount", f"shift=7,rr=record,rrfile={rr},rrsnapshot=init")
    assert rec.note("recorded")
    before = digest(rr), digest(rr + ".db")
    r = run_urr("-kernel", guests["hello"], "-icount", f"shift=7,rr=record,rrfile={rr},rrsnapshot=init", *bad)
    assert r.status == 2
    one_line(r)
    assert (digest(rr), digest(rr + ".db")) == before


def _foreign_files(tmp_path) -> dict[str, bytes]:
    """Files at RRFILE.db that are not catalogs: another program's SQLite, an empty SQLite
    database (its header page only), and a zero-byte file."""
    made = {}
    for name in ("foreign", "empty"):
        path = tmp_path / f"{name}.db"
        conn = sqlite3.connect(path)
        if name == "foreign":
            conn.execute("CREATE TABLE notes (text TEXT)")
            conn.execute("INSERT INTO notes VALUES ('mine')")
        else:
            conn.execute("PRAGMA user_version = 1")  # writes the header page, no tables
        conn.commit()
        conn.close()
        made[name] = path.read_bytes()
    made["zero"] = b""
    return made


@pytest.mark.parametrize("command", ["list", "info", "verify", "gc", "delete"])
def test_urr_snap_leaves_a_file_that_is_no_catalog_as_it_was(ticks, tmp_path, command):
    import subprocess
    import sys
    from tests.conftest import ROOT
    for name, content in _foreign_files(tmp_path).items():
        db = tmp_path / f"x-{name}.db"
        db.write_bytes(content)
        args = ["delete", ticks, "nope"] if command == "delete" else [command, ticks]
        r = subprocess.run([sys.executable, "-m", "snapshots.cli", "--db", str(db), *args],
                           capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert r.returncode == 2 and "not a snapshot catalog" in r.stderr, (name, r.stderr)
        assert db.read_bytes() == content, name
        assert not (tmp_path / f"x-{name}.db-wal").exists()


def test_a_replay_leaves_a_file_that_is_no_catalog_as_it_was(guests, ticks, tmp_path):
    import shutil
    for name, content in _foreign_files(tmp_path).items():
        rr = str(tmp_path / f"{name}.rr")
        shutil.copy(ticks, rr)
        with open(rr + ".db", "wb") as f:
            f.write(content)
        rep = run_urr("-kernel", guests["ticks"], "-icount", f"shift=7,rr=replay,rrfile={rr},rrsnapshot=init")
        assert rep.status == 2 and "not a snapshot catalog" in one_line(rep), (name, rep.err)
        assert open(rr + ".db", "rb").read() == content, name


def test_a_recording_and_its_replay_tell_the_same_halt(guests, tmp_path):
    """The recording's halt ends because its (piped) input ended; its replay has no host input
    but meets the same halt, and says so in the recording's words."""
    import subprocess
    import sys
    import time
    from tests.conftest import ROOT, Result
    rr = str(tmp_path / "sleep.rr")
    proc = subprocess.Popen([sys.executable, "-m", "urr", "-display", "none", "-kernel", guests["fault-sleep"],
                             "-icount", f"shift=7,rr=record,rrfile={rr}", "-snapshots", "off"],
                            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline().startswith(b"fault: sleep")
    time.sleep(1.0)  # halted by now, waiting for input that may still come
    proc.stdin.close()
    rec = Result(proc.wait(timeout=60), proc.stdout.read(), proc.stderr.read().decode())
    rep = replay(guests, rr, guest="fault-sleep")
    assert rec.status == rep.status == 4
    assert "input ended" in rec.note("guest fault")
    assert rec.note("guest fault") == rep.note("guest fault")


def test_a_halt_with_input_the_guest_never_reads_ends(guests, tmp_path):
    """fault-sleep halts without a timer and never reads its UART: the first byte of its input
    fills the receiver, the rest can never reach it. Before, those waiting bytes counted as input
    that may still wake the guest, and urr ran on for ever (two soak pairs timed out); now the
    halt is final as soon as nothing can wake it, in the recording and, in its words, the replay."""
    rr = str(tmp_path / "unread.rr")
    rec = run_urr("-kernel", guests["fault-sleep"], "-icount", f"shift=7,rr=record,rrfile={rr}", "-snapshots", "off",
                  stdin=b"x" * 100, timeout=60)
    assert rec.status == 4, rec.err
    assert "nothing can wake it (no timer; its serial input waits for it to read the UART)" in rec.note("guest fault")
    rep = replay(guests, rr, guest="fault-sleep")
    assert rep.status == 4 and rep.note("guest fault") == rec.note("guest fault"), rep.err


def _signalled_recording(guests, rr: str, signals: list[tuple[float, int]]):
    """Record longloop, sending each (delay, signal) as a terminal does SIGINT (to urr's process
    group, its catalog writer included) and `kill` SIGTERM (to urr); the run's result."""
    import os
    import subprocess
    import sys
    import time
    from tests.conftest import ROOT, Result
    cmd = [sys.executable, "-m", "urr", "-display", "none", "-kernel", guests["longloop"],
           "-icount", f"shift=7,rr=record,rrfile={rr},rrsnapshot=init"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        start = time.monotonic()
        for delay, signum in signals:
            time.sleep(max(0.0, start + delay - time.monotonic()))
            (os.killpg if signum == 2 else os.kill)(proc.pid, signum)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
    return Result(proc.returncode, out, err.decode())


@pytest.mark.parametrize("signals,status,reason", [
    ([(0.3, 2)], 130, "interrupted"),  # SIGINT during start-up (imports, the catalog's fork)
    ([(0.6, 2)], 130, "interrupted"),
    ([(1.0, 2), (1.02, 2)], 130, "interrupted"),  # twice in quick succession
    ([(0.3, 15)], 143, "terminated"),
    ([(1.0, 15)], 143, "terminated"),
])
def test_signals_at_any_moment_end_a_recording_cleanly(guests, tmp_path, signals, status, reason):
    """One line, the signal's status, a complete log whose replay ends at the same icount with
    the same words, and the catalog's initial snapshot to replay from."""
    rr = str(tmp_path / "sig.rr")
    rec = _signalled_recording(guests, rr, signals)
    assert rec.status == status, rec.err
    line = one_line(rec)
    m = re.fullmatch(rf"urr: {reason} at icount (\d+); state ([0-9a-f]{{32}})", line)
    assert m, line
    where, state = int(m[1]), m[2]
    rep = run_urr("-kernel", guests["longloop"], "-icount", f"shift=7,rr=replay,rrfile={rr},rrsnapshot=init")
    assert rep.status == 0, rep.err
    assert rep.note("replay reached") == f"urr: replay reached the end of the recording at icount {where}: {reason}"
    assert rep.note("replayed").endswith(f"; state {state}")


def test_a_closed_stdout_ends_a_recording_cleanly(guests, tmp_path):
    import subprocess
    import sys
    from tests.conftest import ROOT
    rr = str(tmp_path / "echo.rr")
    proc = subprocess.Popen([sys.executable, "-m", "urr", "-display", "none", "-kernel", guests["echo"],
                             "-icount", f"shift=7,rr=record,rrfile={rr}"], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before the guest says anything
    err = proc.communicate(timeout=60)[1].decode()
    assert proc.returncode == 141, err
    line = err.strip()
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    m = re.fullmatch(r"urr: standard output closed at icount (\d+); state ([0-9a-f]{32})", line)
    assert m, line
    rep = run_urr("-kernel", guests["echo"], "-icount", f"shift=7,rr=replay,rrfile={rr}")
    assert rep.status == 0, rep.err
    assert rep.note("replay reached").endswith(f"icount {m[1]}: standard output closed")
    assert rep.note("replayed").endswith(f"; state {m[2]}")


def test_help_into_a_closed_pipe_is_quiet():
    import subprocess
    import sys
    from tests.conftest import ROOT
    proc = subprocess.Popen([sys.executable, "-m", "urr", "-h"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.communicate(timeout=60)[1].decode()
    assert err == "" and proc.returncode == 141


def test_snapshots_past_a_killed_logs_end_are_left_out(guests, tmp_path):
    """kill -9 leaves snapshots the catalog's writer stored after the log's last complete chunk:
    verify leaves them out (saying so) and passes, -loadvm of one is refused in one line, and
    -loadvm of the last one inside the log replays to the log's end."""
    import os
    import subprocess
    import sys
    import time
    from snapshots.catalog import Catalog
    from tests.conftest import ROOT
    from tests.test_divergence import _wait_for_first_chunk
    rr = str(tmp_path / "killed.rr")
    proc = subprocess.Popen([sys.executable, "-m", "urr", "-display", "none", "-kernel", guests["longloop"],
                             "-icount", f"shift=7,rr=record,rrfile={rr},rrsnapshot=init"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    _wait_for_first_chunk(rr, proc)
    time.sleep(0.5)  # half-way to the next chunk: snapshots have been taken since
    os.kill(proc.pid, 9)  # urr only: its catalog writer's process stores what it was given
    proc.wait()
    for _ in range(600):  # until that process has finished too
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    end = L.LogReader(rr)
    end_icount = max(c.end_icount for c in end.chunks())
    with Catalog.open_existing(rr + ".db", read_only=True) as catalog:
        infos = catalog.list()
    past = [i for i in infos if i.icount > end_icount]
    inside = [i for i in infos if i.icount <= end_icount]
    assert past and inside, (end_icount, [i.icount for i in infos])
    r = subprocess.run([sys.executable, "-m", "snapshots.cli", "verify", rr, "--kernel", guests["longloop"], "-j", "1"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"{len(past)} snapshots past the end of {rr} (icount {end_icount}" in r.stderr
    rep = run_urr("-kernel", guests["longloop"], "-icount", f"shift=7,rr=replay,rrfile={rr}", "-loadvm", past[0].name)
    assert rep.status == 2
    assert f"snapshot '{past[0].name}' (icount {past[0].icount}) is past the end of" in one_line(rep)
    last = max(inside, key=lambda i: i.icount)
    rep = run_urr("-kernel", guests["longloop"], "-icount", f"shift=7,rr=replay,rrfile={rr}", "-loadvm", last.name)
    assert rep.status == 8, rep.err
    assert f"incomplete recording at icount {end_icount}:" in rep.note("replay reached")


def test_a_forged_input_the_run_ends_before_a_digest_checks_is_a_divergence(guests, tmp_path):
    """hello ends long before the first periodic digest: a changed logged input used to replay
    to the same exit with a different state, silently. The digest of the final state, logged
    just before the end record, is checked before the end is accepted."""
    rr = str(tmp_path / "clock.rr")
    rec = run_urr("-kernel", guests["clock"], "-icount", f"shift=7,rr=record,rrfile={rr}", "-snapshots", "off")
    _, records = records_of(rr)
    tsc = [r for r in records if r.kind == L.CLOCK]
    assert tsc and records[-2].kind == L.DIGEST
    last = tsc[-1]
    bad = str(tmp_path / "forged.rr")
    rewrite_log(rr, bad, lambda r: L.Record(r.kind, r.icount, (r.fields[0], r.fields[1] ^ 0x40)) if r == last else r)
    rep = replay(guests, bad, guest="clock")
    assert rec.status % 2 == 1 and rep.status == 6, rep.err
    assert "replay diverged" in one_line(rep)


def test_a_divergence_inside_a_port_read_is_one_line(guests, tmp_path):
    """A logged RTC register read dropped: the replay diverges inside the IN hook, a raw callback
    whose error must surface as one line (it printed a ctypes traceback)."""
    rr = str(tmp_path / "clock.rr")
    run_urr("-kernel", guests["clock"], "-icount", f"shift=7,rr=record,rrfile={rr}", "-snapshots", "off")
    _, records = records_of(rr)
    pit = [r for r in records if r.kind == L.CLOCK and r.fields[0] == 2]  # RTC register reads
    assert pit
    dropped = pit[len(pit) // 2]
    bad = str(tmp_path / "dropped.rr")
    rewrite_log(rr, bad, lambda r: None if r == dropped else r)
    rep = replay(guests, bad, guest="clock")
    assert rep.status == 6, rep.err
    assert one_line(rep).startswith(f"urr: replay diverged at icount {dropped.icount}")


def test_a_fault_the_recording_did_not_have_is_a_divergence(guests, ticks):
    """The replay's guest faults (here: a ud2 put at its entry point, as a changed input could
    make it do) where the recorded guest ran on: a divergence (urr exits 6), not a guest fault (4)."""
    from cpu.machine import GuestError
    from replay.player import Divergence
    from urr.options import parse_args
    from urr.session import Session

    session = Session(parse_args(["-kernel", guests["ticks"], "-display", "none", "-snapshots", "off",
                                  "-icount", f"shift=7,rr=replay,rrfile={ticks}"]))
    try:
        session.machine.ram.write(session.machine.rip(), b"\x0f\x0b")  # ud2
        with pytest.raises(Divergence, match="the guest faulted where the recording did not: "
                                             "unhandled exception #UD invalid opcode") as caught:
            session.run()
        assert not isinstance(caught.value, GuestError) and caught.value.icount == 0
    finally:
        session.close(None, "test")


def test_a_changed_input_that_changes_only_the_output_is_a_divergence(guests, tmp_path):
    """Found by the soak's log mutations: rdrand prints each random value and ends in the same
    state whatever they were, so a forged value replayed to status 33 with other output. The
    digests carry a hash of the guest's output since the previous one."""
    rr, bad = str(tmp_path / "rdrand.rr"), str(tmp_path / "forged.rr")
    rec = run_urr("-kernel", guests["rdrand"], "-icount", f"shift=7,rr=record,rrfile={rr}", "-snapshots", "off")
    assert rec.status == 33, rec.err
    first = next(r for r in records_of(rr)[1] if r.kind == L.RANDOM)
    rewrite_log(rr, bad, lambda r: L.Record(r.kind, r.icount, (r.fields[0] ^ 1,)) if r == first else r)
    rep = replay(guests, bad, guest="rdrand")
    assert rep.status == 6, rep.err
    assert one_line(rep).endswith("the guest's output (serial, debugcon) since the previous digest")
    assert replay(guests, rr, guest="rdrand").status == 33


def _recorded_under_a_debugger(guests, tmp_path, debugger: str, commands: list[str]):
    """fault-ud2 recorded into tmp_path/debugged.rr under GDB (commands as -ex) or the console
    (commands on its standard input): urr's exit status and standard error."""
    rr = str(tmp_path / "debugged.rr")
    if debugger == "console":
        r = run_urr("-kernel", guests["fault-ud2"], "-serial", "none", "-debugger",
                    "-icount", f"shift=7,rr=record,rrfile={rr},rrsnapshot=init",
                    stdin="".join(f"{c}\n" for c in commands).encode())
        return rr, r.status, r.err
    from tests.replays import Recording
    from tests.test_gdb_e2e import run_gdb
    run = run_gdb(Recording("fault-ud2", guests["fault-ud2"], rr, 0, 4, b""), commands, tmp_path,
                  mode="record", rrfile=rr)
    return rr, run.status, run.urr_err


@pytest.mark.parametrize("debugger,commands", [("gdb", ["continue", "kill"]), ("console", ["continue", "quit"])])
def test_leaving_a_debugger_at_a_guest_fault_records_that_fault(guests, tmp_path, debugger, commands):
    """Before: the end record said "debugger session ended" (urr exited 0), so the replay
    stopped there as at a Ctrl-C instead of meeting the fault the recording met."""
    if debugger == "gdb" and shutil.which("gdb") is None:
        pytest.skip("gdb is not installed")
    plain = str(tmp_path / "plain.rr")
    alone = run_urr("-kernel", guests["fault-ud2"], "-serial", "none",
                    "-icount", f"shift=7,rr=record,rrfile={plain},rrsnapshot=init")
    assert alone.status == 4, alone.err
    rr, status, err = _recorded_under_a_debugger(guests, tmp_path, debugger, commands)
    assert status == 4, err
    assert records_of(rr)[1][-1] == records_of(plain)[1][-1]  # the same END: icount, status, reason
    fault = alone.note("guest fault")
    assert fault in err.splitlines(), err
    rep = replay(guests, rr, guest="fault-ud2")
    assert rep.status == 4 and rep.note("guest fault") == fault, rep.err


@pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb is not installed")
def test_a_fault_the_debugger_stepped_over_is_not_the_end(guests, tmp_path):
    """After the fault the user moved RIP past the ud2: the position is no fault any more, so
    leaving ends the recording as a debugger session, and its replay (which makes the same
    write) reaches that end without a fault."""
    rr, status, err = _recorded_under_a_debugger(guests, tmp_path, "gdb",
                                                 ["continue", "set var $pc = $pc + 2", "kill"])
    assert status == 0, err
    end = records_of(rr)[1][-1]
    assert end.kind == L.END and end.fields == (-1, b"debugger session ended")
    rep = replay(guests, rr, guest="fault-ud2")
    assert rep.status == 0 and "guest fault" not in rep.err, rep.err
