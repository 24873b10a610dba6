"""Timeline.step_range (GDB's range stepping) on a real replay of the `calls` guest: it stops
where single steps first leave the range, and runs through an interrupt taken inside it."""
from __future__ import annotations

import random

import pytest

from debugger.rangestep import range_exits
from debugger.timeline import Timeline
from tests.replays import Recording, recorded  # noqa: F401  (recorded is a fixture)


@pytest.fixture(scope="module")
def calls(recorded) -> Recording:  # noqa: F811
    return recorded("calls")


def mix_loop(rec: Recording) -> tuple[int, int]:
    """[start, end) of mix's inner loop: from the target of its backward jne to after the jne."""
    jne = next(i for i in rec.elf.code("mix") if i.mnemonic == "jne")
    return int(jne.op_str, 16), jne.address + jne.size


def stepped_out(tl: Timeline, start: int, end: int) -> tuple[int, int]:
    """The reference: (icount, pc) where single steps first leave [start, end)."""
    tl.stepi()
    while start <= tl.pc() < end:
        tl.stepi()
    return tl.icount, tl.pc()


def test_step_range_stops_where_single_steps_leave_the_range(calls):
    loop = mix_loop(calls)
    mix = calls.elf.code("mix")
    ranges = [loop, (mix[0].address, mix[-1].address + mix[-1].size),  # leaves by its jne / by ret
              (mix[0].address, loop[0])]  # falls through into the loop
    ticks = calls.elf.addr("timer_ticks")
    rng = random.Random(3)
    checked = 0
    with Timeline.for_replay(calls.rrfile, calls.kernel, snapshot="init") as tl:
        tl.add_breakpoint(mix[0].address)
        tl.cont()
        tl.remove_breakpoint(mix[0].address)
        start_icount = tl.icount
        while checked < 12:
            here = rng.randrange(start_icount, calls.icount - 100_000)
            tl.seek(here)
            inside = [r for r in ranges if r[0] <= tl.pc() < r[1]]
            if not inside:
                continue
            start, end = rng.choice(inside)
            before = tl.read_memory(ticks, 8)
            stop = tl.step_range(start, end)
            assert stop.reason == "step"
            got = (stop.icount, stop.pc)
            if tl.read_memory(ticks, 8) != before:
                continue  # a tick inside: single steps would enter the handler (see the next test)
            tl.seek(here)
            assert got == stepped_out(tl, start, end), (here, hex(start), hex(end))
            checked += 1


def test_step_range_runs_through_an_interrupt_taken_inside_it(calls):
    """Find a tick taken inside mix's loop (from the handler, step back to the interrupted
    instruction), start a few instructions before it: the range step ends where the loop is left,
    after the handler ran, at the first arrival there."""
    start, end = mix_loop(calls)
    dispatch = calls.elf.addr("isr_dispatch")
    with Timeline.for_replay(calls.rrfile, calls.kernel, snapshot="init") as tl:
        tl.add_breakpoint(dispatch)
        while True:
            stop = tl.cont()
            assert stop.reason == "breakpoint", "no tick inside mix's loop"
            hit = tl.icount
            while not start <= tl.pc() < end and hit - tl.icount < 100:
                tl.reverse_stepi()
            if start <= tl.pc() < end:
                break
            tl.seek(hit)
        tl.remove_breakpoint(dispatch)
        interrupted = tl.icount  # the tick comes right after this instruction
        for begin in (interrupted - 2, interrupted):  # the tick after the first instruction too
            tl.seek(begin)
            assert start <= tl.pc() < end
            stop = tl.step_range(start, end)
            assert (stop.reason, stop.pc) == ("step", end)
            got = stop.icount
            tl.seek(begin)
            tl.add_breakpoint(end)
            assert tl.cont().icount == got > interrupted
            tl.remove_breakpoint(end)
        tl.step_into_interrupts = True  # monitor step_interrupts on: stop in the handler
        tl.seek(interrupted)
        stop = tl.step_range(start, end)
        assert stop.reason == "step" and stop.icount == interrupted + 1
        mix_at, mix_size = calls.elf.symbols["mix"]
        assert not mix_at <= stop.pc < mix_at + mix_size  # in the interrupt's entry stub


def test_range_exits_from_decoding():
    """A loop is left by falling out of its jne; a ret or jmp through a register has a target
    known only when it runs; a call's target outside the range is an entry."""
    code = bytes.fromhex("4801d6" "75fb" "c3" "e8f6ffffff" "ffe0")  # add; jne -5 (back to add); ret; call; jmp rax
    exits = range_exits(code + bytes(15), 0x1000, 0x1005)
    assert exits.entries == frozenset({0x1005}) and not exits.indirect
    exits = range_exits(code + bytes(15), 0x1000, 0x1006)
    assert exits.entries == frozenset() and list(exits.indirect) == [0x1005]
    exits = range_exits(code[6:] + bytes(15), 0x1006, 0x100D)  # the bytes from the range start
    assert exits.entries == frozenset({0x1001}) and list(exits.indirect) == [0x100B]
