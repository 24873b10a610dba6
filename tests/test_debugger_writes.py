"""A debugger's writes are inputs: a recording made under GDB with `set var` replays exactly; in a
replay a write takes the timeline off its recording (no snapshot of the changed state is stored,
going back returns to the recording, leaving it so is a divergence, exit 6); GDB may disconnect
and reconnect; stub errors are replies, never tracebacks."""
from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess
import sys
import time

import pytest

from debugger.timeline import Timeline
from history.queries import DEBUGGER_WRITE
from replay import log as L
from tests.conftest import ROOT, run_urr
from tests.replays import Recording, recorded  # noqa: F401  (recorded is a fixture)
from tests.test_gdb_e2e import GDB, SESSION, _listening_port, run_gdb
from tests.test_gdbstub import Client, Served
from urr.options import parse_args
from urr.session import Session

needs_gdb = pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb is not installed")
DENSE = "10ms:1s,100ms"


@pytest.fixture(scope="module")
def coarse_ticks(guests, tmp_path_factory) -> str:
    """ticks (~800 k instructions) recorded with one snapshot per 100 ms: a replay keeping one
    per 10 ms adds its own to the catalog."""
    rr = str(tmp_path_factory.mktemp("writes") / "ticks.rr")
    rec = run_urr("-kernel", guests["ticks"], "-serial", "none", "-snapshots", "100ms",
                  "-icount", f"shift=7,rr=record,rrfile={rr},rrsnapshot=init")
    assert rec.status == 33, rec.err
    return rr


def dense_replay(guests, rr: str) -> Timeline:
    opts = parse_args(["-kernel", guests["ticks"], "-display", "none", "-serial", "none", "-snapshots", DENSE,
                       "-icount", f"shift=7,rr=replay,rrfile={rr},rrsnapshot=init"])
    session = Session(opts, out=io.BytesIO(), stdin_fd=None)
    timeline = Timeline(session.machine, session.snapshots, True)
    timeline.session = session
    return timeline


def verify(guests, rr: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from snapshots.cli import main; raise SystemExit(main())",
                           "verify", rr, "--kernel", guests["ticks"]], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)


def test_a_changed_replay_stores_no_snapshot_and_going_back_returns_to_the_recording(guests, coarse_ticks):
    """Before: the replay went on taking periodic snapshots of the changed state into the
    recording's catalog (`urr-snap verify` then failed), and ran on silently."""
    tl = dense_replay(guests, coarse_ticks)
    try:
        tl.seek(200_000)
        here, addr = tl.icount, tl.frame_registers()[1]  # the stack: the guest reads it again
        as_recorded = tl.read_memory(addr, 8)
        names = set(tl.snapshots.infos)
        tl.write_memory(addr, bytes(8))
        assert tl.off_recording
        stop = tl.cont()
        assert stop.reason == "fault"
        assert stop.message == (f"replay diverged at icount {here}: the debugger changed memory at {addr:#x} "
                                "there, so this is not the recorded run (go back to return to it, or branch "
                                "to record the changed run)")
        assert set(tl.snapshots.infos) == names  # none of the changed state
        tl.seek(here)  # back: the recording's state again
        assert not tl.off_recording and tl.read_memory(addr, 8) == as_recorded
        stop = tl.cont()
        assert (stop.reason, stop.exit_status) == ("end", 33)
        assert len(tl.snapshots.infos) > len(names)  # on the recording, the replay adds its own again
    finally:
        tl.close()
    v = verify(guests, coarse_ticks)
    assert v.returncode == 0, v.stdout + v.stderr


def test_a_register_write_is_a_change_too_and_a_seek_back_undoes_it(guests, coarse_ticks):
    tl = dense_replay(guests, coarse_ticks)
    try:
        tl.seek(300_000)
        here, rax = tl.icount, tl.read_register("rax")
        tl.write_register("rax", rax ^ 0xFFFF)
        assert tl.off_recording and tl.read_register("rax") == rax ^ 0xFFFF
        assert tl.divergence().detail.startswith("the debugger changed register rax there")
        stop = tl.reverse_stepi()
        assert stop.reason == "step" and not tl.off_recording
        assert tl.seek(here).reason == "step" and tl.read_register("rax") == rax
    finally:
        tl.close()


@needs_gdb
def test_leaving_a_changed_replay_is_a_divergence(recorded, tmp_path):  # noqa: F811
    """Before: `detach` after `set var` made urr exit 0, its output cut short."""
    hello = recorded("hello")
    run = run_gdb(hello, ["break kmain", "continue", "monitor info replay", "set var $rdi = 1234", "detach"],
                  tmp_path)
    assert run.status == 6, run.urr_err
    at, = run.icounts()
    lines = [line for line in run.urr_err.splitlines() if line.startswith("urr: replay diverged")]
    assert lines == [f"urr: replay diverged at icount {at}: the debugger changed register rdi there, so this is "
                     "not the recorded run (go back to return to it, or branch to record the changed run)"]
    assert "Traceback" not in run.urr_err


@needs_gdb
def test_going_back_after_a_change_leaves_the_replay_on_its_recording(recorded, tmp_path):  # noqa: F811
    hello = recorded("hello")
    run = run_gdb(hello, ["break kmain", "continue", "monitor info replay", "set var $rdi = 1234", "reverse-stepi",
                          "stepi", "print $rdi", "detach"], tmp_path)
    assert run.status == hello.status, run.urr_err
    assert f"$1 = {16 << 20}" in run.out  # the recorded ram_size argument again
    assert "diverged" not in run.urr_err
    at, = run.icounts()  # and GDB's console said the write was undone (before: nothing did)
    assert (f"urr: back on the recording at icount {at - 1}: the debugger's changes (since icount {at}) "
            "are undone") in run.out.splitlines(), run.out


def rodata_address(rec: Recording, text: bytes) -> int:
    seg = next(s for s in rec.elf.segments if text in s.data)
    return seg.paddr + seg.data.index(text)


@needs_gdb
def test_a_recording_with_debugger_writes_replays_exactly(recorded, tmp_path):  # noqa: F811
    """Before: the writes were inputs the log never saw; the replay diverged."""
    hello = recorded("hello")
    rrfile = str(tmp_path / "written.rr")
    greeting = rodata_address(hello, b"Hello from urr")
    run = run_gdb(hello, ["break kmain", "continue", "set var ram_size = 33554432",
                          f"set var *(char *){greeting:#x} = 'J'", "delete", "continue"],
                  tmp_path, mode="record", rrfile=rrfile)
    assert run.status == hello.status, run.urr_err
    records = [r for c in L.LogReader(rrfile).chunks() for r in c.records]
    assert {L.REGWRITE, L.MEMWRITE} <= {r.kind for r in records} and records[-1].kind == L.END
    replay = run_urr("-kernel", hello.kernel, "-serial", "stdio", "-icount",
                     f"shift=7,rr=replay,rrfile={rrfile},rrsnapshot=init")
    assert replay.status == hello.status, replay.err
    assert b"Jello from urr" in replay.out and b"RAM: 32 MiB" in replay.out
    assert f"replayed {records[-1].icount} instructions" in replay.note("replayed")


def record_a_write(rec: Recording, tmp_path, function: str, addr: int, char: str) -> tuple[str, int]:
    """`rec`'s guest recorded under GDB, which writes `char` at `addr` where `function` is first
    entered: the new rrfile, and the icount of the write."""
    rrfile = str(tmp_path / f"{rec.name}-written.rr")
    run = run_gdb(rec, [f"break {function}", "continue", "monitor info replay",
                        f"set var *(char *){addr:#x} = '{char}'", "delete", "continue"],
                  tmp_path, mode="record", rrfile=rrfile)
    assert run.status == rec.status, run.urr_err
    at, = run.icounts()
    return rrfile, at


@needs_gdb
def test_steps_back_over_a_recorded_debugger_write_undo_it(recorded, tmp_path):  # noqa: F811
    """Before: the undo record of reverse steps kept the old bytes of the guest's writes and of
    interrupt frames only, so stepping back over the recording's `set var` kept its new bytes: a
    silently wrong state before the write."""
    hello = recorded("hello")
    greeting = rodata_address(hello, b"Hello from urr")
    rrfile, at = record_a_write(hello, tmp_path, "kmain", greeting, "J")
    with Timeline.for_replay(rrfile, hello.kernel, snapshot="init") as tl:
        tl.seek(at + 600)
        stepped = {}
        while tl.icount > at - 2:
            tl.reverse_stepi()
            stepped[tl.icount] = (tl.read_memory(greeting, 1), tl.session.state_hash())
    with Timeline.for_replay(rrfile, hello.kernel, snapshot="init") as straight:
        for icount in (at - 1, at, at + 1):  # forwards from the start, no step back
            straight.seek(icount)
            assert stepped[icount] == (straight.read_memory(greeting, 1), straight.session.state_hash()), icount
    assert stepped[at - 1][0] == b"H" and stepped[at][0] == b"J"


@needs_gdb
def test_the_history_of_writes_lists_a_debugger_write_as_such(recorded, tmp_path):  # noqa: F811
    """Before: `urr-snap writes` listed the guest's writes only, so a `set var` made while
    recording was missing from the history of the bytes it changed. The write is made ~34 M
    instructions in, in a page the guest never writes: the query finds it only if the log's
    digests list the page there (the write index skips the other intervals)."""
    corrupt = recorded("corrupt")
    addr = rodata_address(corrupt, b"corruption detected")
    rrfile, at = record_a_write(corrupt, tmp_path, "report_corruption", addr, "K")
    query = subprocess.run([sys.executable, "-m", "snapshots.cli", "writes", rrfile, f"{addr:#x}:4", "--kernel",
                            corrupt.kernel, "--csv", "--jobs", "2"], capture_output=True, text=True, cwd=ROOT,
                           timeout=300)
    assert query.returncode == 0, query.stderr
    rows = list(csv.reader(io.StringIO(query.stdout)))
    pc = corrupt.elf.addr("report_corruption")
    assert rows[1:] == [[str(at), f"{pc:#x}", f"{pc:#x} <report_corruption+0>", DEBUGGER_WRITE,
                         b"corr".hex(" "), b"Korr".hex(" ")]], query.stdout


def gdb_batch(port: int, kernel: str, commands: list[str]) -> str:
    argv = [GDB, "-nx", "-batch", "-ex", f"file {kernel}", "-ex", f"target remote 127.0.0.1:{port}"]
    for command in commands:
        argv += ["-ex", command]
    return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=SESSION).stdout


@needs_gdb
def test_gdb_can_disconnect_and_reconnect(recorded, tmp_path):  # noqa: F811
    """Before: a dropped connection ended urr. Now the position is kept for the next GDB."""
    hello = recorded("hello")
    err_path = str(tmp_path / "urr.err")
    with open(err_path, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "urr", "-display", "none", "-serial", "none",
                                 *hello.urr_args(), "-gdb", "tcp::0", "-S"], cwd=ROOT, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        port = _listening_port(proc, err_path)
        first = gdb_batch(port, hello.kernel, ["break kmain", "continue", "monitor info replay", "disconnect"])
        at = re.search(r"Recording position: icount (\d+)", first).group(1)
        time.sleep(0.5)
        assert proc.poll() is None, "urr ended when GDB disconnected"
        second = gdb_batch(port, hello.kernel, ["monitor info replay", 'printf "@pc=%#lx\\n", $pc',
                                                "continue"])
        assert f"Recording position: icount {at}" in second
        assert f"@pc={hello.elf.addr('kmain'):#x}" in second
        assert proc.wait(timeout=SESSION) == hello.status
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with open(err_path) as f:
        err = f.read()
    assert f"urr: gdb went away at icount {at}; waiting for gdb on 127.0.0.1:{port}" in err
    assert "Traceback" not in err


# -- stub errors: replies, never tracebacks ----------------------------------------------------------


@pytest.fixture
def served_replay(recorded):  # noqa: F811
    hello = recorded("hello")
    with Timeline.for_replay(hello.rrfile, hello.kernel, snapshot="init") as tl:
        served = Served(tl)
        client = Client(served.server.port)
        try:
            yield tl, client
        finally:
            client.close()
            served.server.close()


def regnum(name: str) -> int:
    from debugger.tdesc import REGISTERS
    return next(i for i, r in enumerate(REGISTERS) if r.name == name)


def test_a_selector_unicorn_refuses_is_an_error_reply(served_replay, caplog, capfd):
    """`set $fs = 0x2b` in long mode: Unicorn raises; before, the stub logged a traceback."""
    tl, client = served_replay
    assert client.ask(f"P{regnum('fs'):x}=" + (0x2B).to_bytes(4, "little").hex()) == "E01"
    assert "urr: gdb P: cannot write 0x2b to register fs" in capfd.readouterr().err
    assert not tl.off_recording  # nothing was written
    assert client.ask("qSupported:multiprocess+;error-message+").startswith("PacketSize=")
    reply = client.ask(f"P{regnum('gs'):x}=" + (0x2B).to_bytes(4, "little").hex())
    assert reply.startswith("E.cannot write 0x2b to register gs: "), reply
    assert not [r.getMessage() for r in caplog.records if r.name == "debugger.gdbstub"]


def test_seeking_and_stepping_back_after_a_change_are_answered(served_replay, caplog):
    """Before: `monitor replay_seek` or `bs` after a write failed with a traceback."""
    tl, client = served_replay
    for _ in range(50):
        assert client.ask("s").startswith("T05")
    assert client.ask(f"P{regnum('rsp'):x}=" + (0x1000).to_bytes(8, "little").hex()) == "OK"
    assert tl.off_recording
    assert client.ask("s").startswith("T05")
    text, reply = client.ask_console("qRcmd," + b"replay_seek 20".hex())
    assert reply == "OK" and "at icount 20" in text and not tl.off_recording
    assert text.startswith("urr: back on the recording at icount 20: the debugger's changes (since icount 50) ")
    assert client.ask(f"P{regnum('rsp'):x}=" + (0x1000).to_bytes(8, "little").hex()) == "OK"
    text, reply = client.ask_console("bs")
    assert reply.startswith("T05") and tl.icount == 19 and not tl.off_recording
    assert text == "urr: back on the recording at icount 19: the debugger's changes (since icount 20) are undone\n"
    assert not [r.getMessage() for r in caplog.records if r.name == "debugger.gdbstub"]


def test_stepping_back_after_flags_with_vm_set_is_answered(served_replay, caplog):
    """Found by the soak's stub fuzz (seed 2064726110): EFLAGS written with VM (virtual-8086) and
    TF set, then `bs`: restoring the snapshot loaded the segments with the debugger's flags, and
    the load failed (ModeError, a logged stub failure) on every reverse step and seek after it."""
    tl, client = served_replay
    for _ in range(19):
        assert client.ask("s").startswith("T05")
    recorded = tl.read_register("eflags")
    assert client.ask("s").startswith("T05")
    assert client.ask(f"P{regnum('eflags'):x}=" + (0x84BF27E6).to_bytes(4, "little").hex()) == "OK"
    text, reply = client.ask_console("bs")
    assert reply.startswith("T05") and tl.icount == 19 and not tl.off_recording
    assert text.startswith("urr: back on the recording at icount 19") and tl.read_register("eflags") == recorded
    assert not [r.getMessage() for r in caplog.records if r.name == "debugger.gdbstub"]


def test_breakpoints_past_the_address_space_are_refused(served_replay, caplog):
    """Found by the stub fuzz: Z0 at 0xffffffffffffffff made Unicorn raise (UC_ERR_ARG)."""
    _, client = served_replay
    assert client.ask("Z0,ffffffffffffffff,1") == "E01"
    assert client.ask("Z2,fffffffffffffff8,8") == "E01"
    assert client.ask("Z0,fffffffffffffffe,1") == "OK"
    assert not [r.getMessage() for r in caplog.records if r.name == "debugger.gdbstub"]


def test_a_pc_past_ram_is_a_fault_stop_not_an_emulator_error(served_replay, caplog):
    """Found by the stub fuzz: with RIP at the end of RAM (set from GDB) a step or seek raised
    Unicorn's UcError while urr looked for a HLT or an RDRAND before RIP."""
    tl, client = served_replay
    assert client.ask(f"P{regnum('rip'):x}=" + (16 << 20).to_bytes(8, "little").hex()) == "OK"
    text, reply = client.ask_console("s")
    assert reply.startswith("T0b") and "the debugger changed register rip there" in text
    text, reply = client.ask_console("qRcmd," + b"replay_seek 5".hex())  # on from the changed state
    assert reply == "OK" and text.startswith("urr: replay diverged at icount 0: the debugger changed register rip")
    text, reply = client.ask_console("qRcmd," + b"replay_seek 0".hex())  # here: the recorded state again
    assert reply == "OK" and f"at icount 0, pc {tl.pc():#x}" in text and not tl.off_recording
    assert tl.pc() != 16 << 20
    assert not [r.getMessage() for r in caplog.records if r.name == "debugger.gdbstub"]


def test_a_fault_before_the_first_instruction_of_a_slice_keeps_the_icount(guests, tmp_path):
    """Found by the stub fuzz: with CR3 pointing at garbage no instruction runs; each step then
    took one off the icount (the fault counted as an instruction that did not run), until a
    recording's log went back in time and could not be closed."""
    opts = parse_args(["-kernel", guests["hello"], "-display", "none", "-serial", "none", "-snapshots", "off",
                       "-icount", f"shift=7,rr=record,rrfile={tmp_path / 'cr3.rr'}"])
    session = Session(opts, out=io.BytesIO(), stdin_fd=None)
    tl = Timeline(session.machine, session.snapshots, False)
    for _ in range(10):
        tl.stepi()
    tl.write_register("cr3", 0x2B)
    for _ in range(3):
        stop = tl.stepi()
        assert (stop.reason, stop.icount) == ("fault", 10) and "(icount 10, " in stop.message
    session.close(None, "test")  # the log's records in order: it closes
    assert list(L.LogReader(str(tmp_path / "cr3.rr")).chunks())
