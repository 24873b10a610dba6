"""Who wrote this variable: a write GDB made while recording (`set var`, logged and made again by
the replay between instructions) is found by watchpoints forwards and backwards and by last-write,
named as the debugger's, at its icount. Before, only `urr-snap writes` listed it: `watch` and
`reverse-continue` ran past it, and last-write named the guest's write before it (or none)."""
from __future__ import annotations

import dataclasses
import io
import re
import subprocess
import sys

import pytest

from debugger.console import Console
from debugger.timeline import Timeline
from tests.conftest import ROOT
from tests.replays import Recording, recorded  # noqa: F401  (recorded is a fixture)
from tests.test_debugger_writes import needs_gdb, record_a_write, rodata_address
from tests.test_gdb_e2e import PC, WHERE, run_gdb
from tests.test_gdbstub import Client, Served

pytestmark = needs_gdb


@pytest.fixture(scope="module")
def written(recorded, tmp_path_factory) -> tuple[Recording, str, int, int]:  # noqa: F811
    """hello recorded under GDB, which writes 'J' over the 'H' of its greeting (read-only data
    the guest never writes), then 'e' over its 'e' (a write that changes nothing), where kmain
    is entered: (recording, rrfile, greeting, icount)."""
    hello = recorded("hello")
    greeting = rodata_address(hello, b"Hello from urr")
    tmp_path = tmp_path_factory.mktemp("watched")
    rrfile = str(tmp_path / "hello-written.rr")
    run = run_gdb(hello, ["break kmain", "continue", WHERE, f"set var *(char *){greeting:#x} = 'J'",
                          f"set var *(char *){greeting + 1:#x} = 'e'", "delete", "continue"],
                  tmp_path, mode="record", rrfile=rrfile)
    assert run.status == hello.status, run.urr_err
    at, = run.icounts()
    return hello, rrfile, greeting, at


def said(at: int, greeting: int) -> str:
    return f"written from the debugger while recording: 1 byte at {greeting:#x}, at icount {at}"


@pytest.mark.parametrize("kind, changes_only", [("w", True), ("w", False), ("a", False)])
def test_watchpoints_stop_at_the_write_both_ways(written, kind, changes_only):
    hello, rrfile, greeting, at = written
    with Timeline.for_replay(rrfile, hello.kernel, snapshot="init") as tl:
        tl.add_watchpoint(greeting, 1, kind, changes_only)
        stop = tl.cont()  # right after the write, before the instruction at its icount
        assert (stop.reason, stop.icount, stop.watch_addr, stop.watch_kind) == ("watchpoint", at, greeting, kind)
        assert stop.message == said(at, greeting) and stop.pc == hello.elf.addr("kmain")
        assert tl.read_memory(greeting, 1) == b"J"
        # on to the end ("a": to the instruction after; printf reads the greeting later)
        assert tl.cont().reason == "end" if kind == "w" else tl.stepi().icount == at + 1
        back = tl.reverse_cont()  # right before it, at the same icount and instruction
        assert (back.reason, back.icount, back.pc, back.message) == ("watchpoint", at, stop.pc, stop.message)
        assert tl.read_memory(greeting, 1) == b"H"
        again = tl.cont()  # forward from there: the write is made again, and stops again
        assert (again.reason, again.icount) == ("watchpoint", at) and tl.read_memory(greeting, 1) == b"J"
        assert tl.reverse_cont().icount == at and tl.read_memory(greeting, 1) == b"H"
        assert tl.reverse_cont().reason == "begin"


def test_a_watch_lets_a_write_of_the_same_value_pass(written):
    """GDB's `watch` shows changes only, so its watchpoint (changes_only) skips the debugger's
    write of the 'e' already there; awatch and the console's watch see it."""
    hello, rrfile, greeting, at = written
    with Timeline.for_replay(rrfile, hello.kernel, snapshot="init") as tl:
        tl.add_watchpoint(greeting + 1, 1, "w", changes_only=True)
        assert tl.cont().reason == "end"
        tl.add_watchpoint(greeting + 1, 1, "w")  # the same watchpoint, blind to nothing now
        back = tl.reverse_cont()
        assert (back.reason, back.icount, back.watch_addr) == ("watchpoint", at, greeting + 1)
        assert tl.read_memory(greeting, 2) == b"Je"  # before the second write, after the first
        tl.remove_watchpoint(greeting + 1, 1, "w")
        tl.add_watchpoint(greeting + 1, 1, "a")
        stop = tl.cont()
        assert (stop.reason, stop.icount, stop.watch_kind) == ("watchpoint", at, "a")


def test_last_write_names_the_debugger_and_leaves_the_position(written):
    hello, rrfile, greeting, at = written
    with Timeline.for_replay(rrfile, hello.kernel, snapshot="init") as tl:
        assert tl.cont().reason == "end"
        end, state = tl.icount, tl.session.state_hash()
        assert tl.last_write(greeting, 4) == (at, None, b"Jell", b"Jell")  # the 'e' written again
        assert tl.last_write(greeting, 1) == (at, None, b"H", b"J")
        assert (tl.icount, tl.session.state_hash()) == (end, state)
        tl.add_watchpoint(greeting, 1, "w")
        assert tl.reverse_cont().icount == at  # before the write: last-write must not make it
        assert tl.last_write(greeting, 4) is None and tl.read_memory(greeting, 1) == b"H"
        tl.remove_watchpoint(greeting, 1, "w")
        assert tl.stepi().icount == at + 1 and tl.read_memory(greeting, 1) == b"J"
        assert tl.last_write(greeting, 1) == (at, None, b"H", b"J")
    out = io.StringIO()
    console = Console(Timeline.for_replay(rrfile, hello.kernel, snapshot="init"), hello.kernel, stdout=out)
    try:
        console.onecmd("continue")
        out.truncate(0)
        out.seek(0)
        console.onecmd(f"last-write {greeting:#x} 1")
        assert out.getvalue().startswith(f"last write to {console.where(greeting)}: icount {at}, written from the debugger "
                                         "while recording\n  old 48  (= 0x48)\n  new 4a  (= 0x4a)"), out.getvalue()
    finally:
        console.tl.close()


@pytest.mark.parametrize("command, stopped, on", [
    ("watch", "Hardware watchpoint 1", "continue"),  # to the end
    ("awatch", "Hardware access (read/write) watchpoint 1", "stepi")])  # printf reads it later
def test_gdb_watch_and_reverse_continue_stop_at_the_write(written, tmp_path, command, stopped, on):
    """Real GDB: forwards it shows the write's old and new value with urr's line naming the
    debugger; reverse-continue stops before it, at the same icount."""
    hello, rrfile, greeting, at = written
    replay = dataclasses.replace(hello, rrfile=rrfile)
    lvalue = f"*(char *){greeting:#x}"
    run = run_gdb(replay, [f"{command} {lvalue}", "continue", WHERE, PC, f"print {lvalue}", on,
                           "reverse-continue", WHERE, PC, f"print {lvalue}", "reverse-continue"], tmp_path)
    assert run.status == hello.status, run.urr_err
    assert run.icounts() == [at, at], run.out
    assert run.pcs() == [hello.elf.addr("kmain")] * 2
    changes = [f"{stopped}: {lvalue}\n\nOld value = 72 'H'\nNew value = 74 'J'\n",
               f"{stopped}: {lvalue}\n\nOld value = 74 'J'\nNew value = 72 'H'\n"]
    assert all(change in run.out for change in changes), run.out
    assert run.out.count(f"urr: {said(at, greeting)}\n") == 2, run.out
    assert "$1 = 74 'J'" in run.out and "$2 = 72 'H'" in run.out
    assert run.out.count("No more reverse-execution history.") == (2 if on == "continue" else 1), run.out


def test_snap_info_says_the_log_holds_debugger_writes(written):
    """Before: `urr-snap info` said nothing of them; only `urr-snap writes` at the right address
    showed one."""
    hello, rrfile, _, _ = written
    info = subprocess.run([sys.executable, "-m", "snapshots.cli", "info", rrfile], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert info.returncode == 0, info.stderr
    assert (f"debugger      2 writes to memory, 0 to registers, made while recording (replays make them again): "
            f"`urr-snap writes {rrfile} ADDR[:LEN]` lists those to an address\n") in info.stdout, info.stdout
    plain = subprocess.run([sys.executable, "-m", "snapshots.cli", "info", hello.rrfile], capture_output=True,
                           text=True, cwd=ROOT, timeout=120)
    assert plain.returncode == 0 and "recording" in plain.stdout and "debugger" not in plain.stdout, plain.stdout


def test_gdb_monitor_last_write_names_the_debugger_and_the_instruction(written, tmp_path):
    """`monitor last_write`: before, GDB had no way to ask last-write (the console's command)."""
    hello, rrfile, greeting, at = written
    replay = dataclasses.replace(hello, rrfile=rrfile)
    run = run_gdb(replay, ["continue", WHERE, f"monitor last_write {greeting:#x} 1",
                           'eval "monitor last_write %#lx", $rsp - 8', WHERE, "monitor last_write 0x10 0",
                           "monitor last_write"], tmp_path)
    assert run.status == hello.status, run.urr_err
    end, after = run.icounts()
    assert after == end  # the position did not move
    assert (f"last write to {greeting:#x}: icount {at}, written from the debugger while recording\n"
            "  old 48  (= 0x48)\n  new 4a  (= 0x4a)\n") in run.out, run.out
    stack = re.search(r"^last write to (0x[0-9a-f]+): icount (\d+) at (0x[0-9a-f]+)\n  old ([0-9a-f ]+)  .*\n"
                      r"  new ([0-9a-f ]+)  ", run.out, re.M)
    assert stack, run.out  # the stack word at the end: the return address `call kmain` pushed, just before
    assert int(stack[2]) == at - 1 and len(bytes.fromhex(stack[4])) == 8
    assert int.from_bytes(bytes.fromhex(stack[5]), "little") == int(stack[3], 16) + 5  # call rel32: 5 bytes
    assert "error: bad length '0'\n" in run.out and "error: usage: last_write ADDR [LEN]\n" in run.out


def test_far_into_a_recording_the_write_index_leads_to_the_write(recorded, tmp_path):  # noqa: F811
    """The write ~34 M instructions in, in a page the guest never writes: continue and
    reverse-continue to a write watchpoint replay only the digest intervals whose page lists name
    the watched page, and the debugger's write must be among them (as the guest's are)."""
    corrupt = recorded("corrupt")
    addr = rodata_address(corrupt, b"corruption detected")
    rrfile, at = record_a_write(corrupt, tmp_path, "report_corruption", addr, "K")
    with Timeline.for_replay(rrfile, corrupt.kernel, snapshot="init") as tl:
        tl.add_watchpoint(addr, 4, "w", changes_only=True)
        stop = tl.cont()
        assert (stop.reason, stop.icount, tl.read_memory(addr, 4)) == ("watchpoint", at, b"Korr")
        assert tl.cont().reason == "end"
        back = tl.reverse_cont()
        assert (back.reason, back.icount, tl.read_memory(addr, 4)) == ("watchpoint", at, b"corr")
        assert back.message == f"written from the debugger while recording: 1 byte at {addr:#x}, at icount {at}"
        assert tl.reverse_cont().reason == "begin"
        tl.remove_watchpoint(addr, 4, "w")
        assert tl.cont().reason == "end"
        assert tl.last_write(addr, 4) == (at, None, b"corr", b"Korr")


def test_going_back_a_breakpoint_at_the_same_icount_comes_first(written):
    """The write is made before the instruction at its icount runs: going back from the end,
    the breakpoint there (reached after the write) stops first, then the write."""
    hello, rrfile, greeting, at = written
    with Timeline.for_replay(rrfile, hello.kernel, snapshot="init") as tl:
        assert tl.cont().reason == "end"
        tl.add_breakpoint(hello.elf.addr("kmain"))
        tl.add_watchpoint(greeting, 1, "w", changes_only=True)
        stop = tl.reverse_cont()
        assert (stop.reason, stop.icount, tl.read_memory(greeting, 1)) == ("breakpoint", at, b"J")
        stop = tl.reverse_cont()
        assert (stop.reason, stop.icount, tl.read_memory(greeting, 1)) == ("watchpoint", at, b"H")
        assert tl.reverse_cont().reason == "begin"


def test_monitor_last_write_in_a_changed_replay_says_the_change_is_undone(written):
    """The search replays the recording, so a change made from GDB is gone after it: before,
    `monitor last_write` (new) would have dropped it without a word."""
    hello, rrfile, greeting, at = written
    with Timeline.for_replay(rrfile, hello.kernel, snapshot="init") as tl:
        served = Served(tl)
        client = Client(served.server.port)
        try:
            for _ in range(at + 3):
                assert client.ask("s").startswith("T05")
            assert client.ask(f"M{greeting:x},1:5a") == "OK" and tl.off_recording
            text, reply = client.ask_console("qRcmd," + f"last_write {greeting:#x} 1".encode().hex())
            assert reply == "OK" and not tl.off_recording and tl.read_memory(greeting, 1) == b"J"
            assert text == (f"urr: back on the recording at icount {at + 3}: the debugger's changes (since icount "
                            f"{at + 3}) are undone\nlast write to {greeting:#x}: icount {at}, written from the "
                            "debugger while recording\n  old 48  (= 0x48)\n  new 4a  (= 0x4a)\n"), text
        finally:
            client.close()
            served.server.close()
