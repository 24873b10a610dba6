"""What the GDB stub does in the target so that GDB need not stop: breakpoint conditions,
same-value writes under `watch`, range stepping; and Ctrl-C through the stub on a real replay.

Real GDB against `urr -gdb` replaying the `calls` guest (mix() called 12,000 times); expected
positions come from a straight replay with a plain Unicorn hook on mix, not from the stub."""
from __future__ import annotations

import io
import re
import threading
import time

import pytest
from unicorn import UC_HOOK_CODE, UC_HOOK_MEM_WRITE

from debugger.timeline import Timeline
from tests.replays import Recording, recorded  # noqa: F401  (recorded is a fixture)
from tests.test_gdb_e2e import GDB, PC, WHERE, run_gdb, show
from tests.test_gdbstub import Client, Served
from urr.options import parse_args
from urr.session import Session

pytestmark = pytest.mark.skipif(GDB is None, reason="gdb is not installed")


@pytest.fixture(scope="module")
def calls(recorded) -> Recording:  # noqa: F811
    return recorded("calls")


def straight_session(rec: Recording) -> Session:
    opts = parse_args(["-kernel", rec.kernel, "-serial", "none", "-snapshots", "off",
                       "-icount", f"shift=7,rr=replay,rrfile={rec.rrfile},rrsnapshot=init"])
    return Session(opts, out=io.BytesIO(), stdin_fd=None)


def mix_entries(rec: Recording) -> list[int]:
    """The icount at each call of mix, in a straight replay."""
    session = straight_session(rec)
    seen: list[int] = []
    try:
        machine = session.machine
        machine.uc.hook_add(UC_HOOK_CODE, lambda uc, a, s, d: seen.append(machine.now()), None,
                            rec.elf.addr("mix"), rec.elf.addr("mix"))
        machine.uc.ctl_flush_tb()
        session.run()
    finally:
        session.close(None, "test")
    return seen


def remote_log(out: str, packet: str) -> int:
    """How many times GDB (under `set debug remote 1`) sent a packet starting with `packet`."""
    return len(re.findall(rf"Sending packet: \${re.escape(packet)}", out))


def test_conditional_breakpoint_true_once_in_10000_crossings_both_ways(calls, tmp_path):
    """The condition goes to the target as bytecode and is evaluated there: one resume each way."""
    entries = mix_entries(calls)
    assert len(entries) == 12000
    run = run_gdb(calls, ["break mix if call == 10500", "set debug remote 1", "continue", "set debug remote 0",
                          WHERE, *show("call"), "delete",
                          "break mix if call == 500", "set debug remote 1", "reverse-continue",
                          "set debug remote 0", WHERE, *show("call"), "info breakpoints"], tmp_path)
    assert run.icounts() == [entries[10500], entries[500]]
    assert re.findall(r"^Breakpoint \d, mix \(call=call@entry=(\d+),", run.out, re.M) == ["10500", "500"]
    assert remote_log(run.out, "Z0,") == 2 and re.search(r"\$Z0,[0-9a-f]+,1;X[0-9a-f]+,[0-9a-f]+#", run.out)
    assert remote_log(run.out, "vCont;c") == 1 and remote_log(run.out, "bc") == 1, run.out
    assert "breakpoint already hit 1 time" in run.out


def test_ignore_counts_forwards_and_backwards(calls, tmp_path):
    """GDB keeps ignore counts itself: every crossing is a stop and a resume."""
    entries = mix_entries(calls)
    run = run_gdb(calls, ["break mix", "ignore 1 400", "continue", WHERE, *show("call"), "ignore 1 100",
                          "reverse-continue", WHERE, *show("call")], tmp_path)
    assert run.icounts() == [entries[400], entries[299]]
    assert re.findall(r"^@call\n\$\d+ = (\d+)$", run.out, re.M) == ["400", "299"]


def level_writes(rec: Recording) -> list[tuple[int, int, int]]:
    """(icount, old, new) of every write to `level` by mix (crt0 zeroes it first) in a straight replay."""
    session = straight_session(rec)
    addr = rec.elf.addr("level")
    writes: list[tuple[int, int, int]] = []
    try:
        machine = session.machine

        def on_write(uc, access, address, size, new, _ud):
            if rec.elf.function_at(machine.rip()) == "mix":
                writes.append((machine.now(), int.from_bytes(machine.ram.read(addr, 8), "little"), new))
        machine.uc.hook_add(UC_HOOK_MEM_WRITE, on_write, None, addr, addr + 7)
        session.run()
    finally:
        session.close(None, "test")
    return writes


def test_watch_skips_same_value_writes_in_the_target(calls, tmp_path):
    """`level` is written on every call, changing every 250: GDB shows the changes (old and new
    values as it would without the stub's filtering), with one resume per change, both ways."""
    writes = level_writes(calls)
    changes = [(i, old, new) for i, old, new in writes if old != new]
    assert len(writes) == 12000 and len(changes) == 12000 // 250 - 1
    run = run_gdb(calls, ["break mix if call == 2", "continue", "delete", "watch level", "set debug remote 1",
                          *["continue", WHERE] * 3, "reverse-continue", WHERE, "set debug remote 0"], tmp_path)
    shown = [tuple(map(int, m)) for m in re.findall(
        r"^Hardware watchpoint 2: level\n\nOld value = (\d+)\nNew value = (\d+)$", run.out, re.M)]
    assert shown == [(old, new) for _, old, new in changes[:3]] + [(changes[2][2], changes[2][1])]
    # forwards GDB stops right after the write; backwards on the write itself
    assert run.icounts() == [i + 1 for i, _, _ in changes[:3]] + [changes[2][0]]
    assert remote_log(run.out, "vCont;c") == 3 and remote_log(run.out, "bc") == 1, run.out


def test_awatch_still_sees_same_value_writes(calls, tmp_path):
    writes = level_writes(calls)
    start = next(i for i, old, new in writes if old == new)  # a same-value write, then more
    run = run_gdb(calls, [f"monitor replay_seek {start}", "maintenance flush register-cache", "awatch level",
                          *["continue", WHERE] * 2], tmp_path)
    after = [i + 1 for i, _, _ in writes if i >= start]
    assert run.icounts() == after[:2], run.out
    assert len(re.findall(r"^Value = \d+$", run.out, re.M)) == 2, run.out  # GDB's words for "unchanged"


def test_ctrl_c_stops_a_long_continue_and_a_long_reverse_continue(recorded):  # noqa: F811
    """0x03 from a raw client while a real replay runs: SIGINT, in the middle of the run. The
    stub reads it where the run checks for interrupts: no thread watches the socket."""
    rec = recorded("corrupt")
    with Timeline.for_replay(rec.rrfile, rec.kernel, snapshot="init") as tl:
        served = Served(tl)
        client = Client(served.server.port)
        try:
            kmain = rec.elf.addr("kmain")
            assert client.ask(f"Z0,{kmain:x},1") == "OK"
            assert client.ask("c") == "T05thread:01;swbreak:;"  # near the start
            hit = tl.icount
            for packet in ("c", "bc"):
                before, threads = tl.icount, threading.active_count()
                client.send(packet)
                deadline = time.monotonic() + 60
                while tl.icount == before and time.monotonic() < deadline:
                    time.sleep(0.001)  # the run has begun
                assert threading.active_count() == threads
                client.sock.sendall(b"\x03")
                assert client.reply() == "T02thread:01;"
                assert tl.icount != before and hit < tl.icount < rec.icount, (packet, tl.icount)
                if packet == "c":
                    tl.seek(rec.icount - 1)  # reverse-continue from near the end
            client.send("D")
            assert client.reply() == "OK"
        finally:
            client.close()
            served.ended()
            served.server.close()


@pytest.mark.parametrize("watched", [False, True])
def test_last_write_still_finds_a_same_value_write(calls, watched):
    """The console's last-write answers with the last write, even one that changed nothing, also
    while a GDB `watch` (blind to such writes) is set on the same bytes, which it leaves as it was."""
    writes = level_writes(calls)
    icount, old, new = next(w for w in reversed(writes[:1000]) if w[1] == w[2])
    level = calls.elf.addr("level")
    with Timeline.for_replay(calls.rrfile, calls.kernel, snapshot="init") as tl:
        if watched:
            tl.add_watchpoint(level, 8, "w", changes_only=True)
        tl.seek(icount + 3)
        found, _, before, after = tl.last_write(level, 8)
        assert ((level, 8, "w") in tl.changes_only) == watched
    assert (found, before, after) == (icount, old.to_bytes(8, "little"), new.to_bytes(8, "little"))


def test_next_uses_range_stepping_and_runs_through_timer_interrupts(calls, tmp_path):
    """`next` along kmain's loop, long enough for timer ticks to fall inside some lines: one
    `vCont;r` per line (GDB single-steps otherwise), every stop at the start of the next line
    in kmain, at the icount where execution first gets there (a straight run to that address)."""
    nexts = 120
    run = run_gdb(calls, ["break mix if call == 100", "continue", "delete", "finish", "set debug remote 1",
                          *[c for _ in range(nexts) for c in ("next", PC, WHERE)], "set debug remote 0"], tmp_path)
    pcs, icounts = run.pcs(), run.icounts()
    assert len(pcs) == len(icounts) == nexts
    assert {calls.elf.function_at(pc) for pc in pcs} == {"kmain"}
    loop, call = calls.source_line("for (uint64_t call = 0;"), calls.source_line("acc = mix(call, acc);")
    assert set(run.listed()[-nexts:]) == {loop, call}, run.out
    assert remote_log(run.out, "vCont;r") >= nexts and remote_log(run.out, "vCont;s") < nexts // 4, run.out
    ticks = calls.elf.addr("timer_ticks")
    with Timeline.for_replay(calls.rrfile, calls.kernel, snapshot="init") as tl:
        for here, (pc, icount) in zip(icounts, list(zip(pcs, icounts))[1:]):
            tl.seek(here)
            tl.add_breakpoint(pc)
            assert (tl.cont().icount, tl.pc()) == (icount, pc)
            tl.remove_breakpoint(pc)
        tl.seek(icounts[0])
        first = tl.read_memory(ticks, 8)
        tl.seek(icounts[-1])
        assert int.from_bytes(tl.read_memory(ticks, 8), "little") > int.from_bytes(first, "little")
