"""Reverse stepping through real GDB at the speed GDB drives it, on revloop (a compute loop with a
1 kHz timer): reverse-finish out of a function gcc inlined into a loop (~2,000 single steps back),
next and reverse-next over a source line during which the timer interrupt fires, and the monitor
switch that makes steps stop in interrupt handlers instead."""
from __future__ import annotations

import bisect
import random
import re
import subprocess

import pytest

from debugger.timeline import Stop, Timeline
from replay import log as L
from tests.replays import Recording, recorded  # noqa: F401  (recorded is a fixture)
from tests.test_gdb_e2e import GDB, PC, SESSION, WHERE, run_gdb
from tests.test_gdbstub import Served

pytestmark = pytest.mark.skipif(GDB is None, reason="gdb is not installed")

MIX_LOOP_INSTRUCTIONS = 285 * 7  # revloop.c: MIX_STEPS rounds of 7 instructions


@pytest.fixture(scope="module")
def revloop(recorded) -> Recording:  # noqa: F811
    return recorded("revloop")


def frames(out: str) -> list[tuple[str, int]]:
    """(function, line) of every `#0` frame line GDB printed, in order."""
    return [(f, int(n)) for f, n in re.findall(r"^#0  (?:0x[0-9a-f]+ in )?(\w+) \(.*\) at \S*?(?:\w+\.[cS]):(\d+)$",
                                               out, re.M)]


def line_address(rec: Recording, line: int) -> int:
    out = subprocess.run([GDB, "-nx", "-batch", "-ex", f"file {rec.kernel}", "-ex", f"info line {rec.name}.c:{line}"],
                         capture_output=True, text=True, check=True).stdout
    return int(re.search(r"starts at address (0x[0-9a-f]+)", out).group(1), 16)


def test_reverse_finish_out_of_an_inlined_loop(revloop, tmp_path):
    """From the end of mix (inlined into kmain's loop), reverse-finish steps back over its whole
    loop, one `bs` at a time, to kmain's line that calls it."""
    end_of_mix = revloop.source_line("return x ^ salt;")
    call = revloop.source_line("sum = mix(sum, round);")
    run = run_gdb(revloop, [f"break revloop.c:{end_of_mix}", "continue", "continue", WHERE, "bt 1",
                            "reverse-finish", WHERE, PC, "bt 1"], tmp_path)
    (inside, _), back_in = frames(run.out)
    assert inside == "mix" and back_in == ("kmain", call), run.out
    at_end, back = run.icounts()
    assert at_end - back >= MIX_LOOP_INSTRUCTIONS
    assert revloop.elf.function_at(run.pcs()[0]) == "kmain"


def _line_with_a_tick(rec: Recording, line: int) -> tuple[int, int]:
    """(icount, IRQ icount): a time scramble's long line starts with the timer's interrupt
    delivered before it ends."""
    with Timeline.for_replay(rec.rrfile, rec.kernel, snapshot="init") as tl:
        irqs = [r.icount for r in tl.machine.seam.core.player.records if r.kind == L.IRQ]
        tl.add_breakpoint(line_address(rec, line))
        while (stop := tl.cont()).reason == "breakpoint":
            k = bisect.bisect_right(irqs, stop.icount)
            if k < len(irqs) and irqs[k] < stop.icount + 900:  # the line is 1,000 instructions
                return stop.icount, irqs[k]
    raise AssertionError("no tick during the long line")


def test_next_and_reverse_next_over_a_line_during_which_the_timer_fires(revloop, tmp_path):
    """next over scramble's 1,000-instruction line goes on through the timer's handler to the
    next line, and reverse-next comes back to the start of the line, as if no interrupt had come
    (GDB steps through the line one instruction at a time). With `monitor step_interrupts on`,
    next stops in the handler instead."""
    line = revloop.source_line("/* one line */")
    start, tick = _line_with_a_tick(revloop, line)
    seek = [f"monitor replay_seek {start}", "maintenance flush register-cache"]
    run = run_gdb(revloop, [*seek, "frame", WHERE, "next", "frame", WHERE, "reverse-next", "frame", WHERE, PC,
                            "monitor step_interrupts", "monitor step_interrupts on", *seek, "next", "frame", WHERE],
                  tmp_path)
    began, after, back, into = run.icounts()
    assert began == back == start and after > tick
    assert "steps go on through interrupt handlers (step_interrupts off)" in run.out
    here, nxt, again, handler = frames(run.out)
    assert here == again == ("scramble", line) and nxt == ("scramble", line + 1), run.out
    assert handler[0] != "scramble" and into > tick, run.out  # stopped in the handler
    assert run.pcs() == [line_address(revloop, line)]


def test_reverse_next_over_a_loop(revloop, tmp_path):
    """reverse-next from the line after `sum = churn(...)` goes back over the call, whose loop
    runs ~160,000 instructions with the timer firing all along, to the start of its line."""
    churn_line = revloop.source_line("sum = churn(data, WORDS, &state, sum);")
    after = revloop.source_line("heartbeat = 1;")
    run = run_gdb(revloop, [f"break revloop.c:{after}", "continue", "continue", WHERE, "reverse-next", "frame",
                            WHERE, PC, "next", WHERE], tmp_path)
    at_after, at_call, again = run.icounts()
    assert at_after - at_call > 160_000 and again == at_after
    assert frames(run.out)[-1] == ("kmain", churn_line), run.out
    assert run.pcs() == [line_address(revloop, churn_line)]


def test_stepi_through_an_interrupt_both_ways(revloop, tmp_path):
    """stepi from the instruction before an interrupt is delivered ends after the handler's
    iretq, at the interrupted code; reverse-stepi from there comes back. With step_interrupts on,
    stepi stops at the handler's first instruction."""
    line = revloop.source_line("/* one line */")
    _, tick = _line_with_a_tick(revloop, line)
    seek = [f"monitor replay_seek {tick - 1}", "maintenance flush register-cache"]
    run = run_gdb(revloop, [*seek, PC, "stepi", PC, WHERE, "reverse-stepi", PC, WHERE,
                            "monitor step_interrupts on", *seek, "stepi", PC, WHERE], tmp_path)
    before, after, back, handler = run.pcs()
    returned, back_at, entered = run.icounts()
    assert back == before and back_at == tick - 1
    assert returned > tick + 10 and revloop.elf.function_at(after) == "scramble"
    start, size = revloop.elf.symbols["scramble"]
    assert entered == tick and not start <= handler < start + size  # the interrupt stub


def gdb_on(tl: Timeline, rec: Recording, commands: list[str]) -> str:
    """GDB with `commands` against a stub serving `tl` in this process (so the test can watch
    what the timeline does); GDB's output."""
    served = Served(tl)
    try:
        argv = [GDB, "-nx", "-batch", "-ex", f"file {rec.kernel}", "-ex", f"target remote 127.0.0.1:{served.server.port}"]
        for command in commands:
            argv += ["-ex", command]
        out = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, timeout=SESSION).stdout
        served.ended()
    finally:
        served.server.close()
    return out


def test_the_first_reverse_step_after_a_seek_restores_no_snapshot(revloop):
    """A seek that restores a snapshot records the stretch before where it lands on its way
    (debugger.checkpoints), so reverse-stepi right after `monitor replay_seek` is served without
    restoring a snapshot and replaying an interval; each step lands where a straight replay is."""
    positions = sorted(random.Random(3).sample(range(revloop.icount // 4, revloop.icount), 4), reverse=True)
    with Timeline.for_replay(revloop.rrfile, revloop.kernel, snapshot="init") as tl:
        restores: list[str] = []
        steps: list[tuple[int, str, int]] = []  # (position, state hash, snapshots restored) per step
        restore, reverse_stepi = tl.snapshots.restore, tl.reverse_stepi

        def restoring(name: str) -> None:
            restores.append(name)
            restore(name)

        def stepping_back() -> Stop:
            before = len(restores)
            stop = reverse_stepi()
            steps.append((tl.icount, tl.session.state_hash(), len(restores) - before))
            return stop
        tl.snapshots.restore, tl.reverse_stepi = restoring, stepping_back
        commands = []
        for n in positions:
            commands += [f"monitor replay_seek {n}", "maintenance flush register-cache", "reverse-stepi", WHERE,
                         "reverse-stepi", WHERE]
        out = gdb_on(tl, revloop, commands)
    where = [int(n) for n in re.findall(r"^Recording position: icount (\d+)$", out, re.M)]
    assert where == [n - k for n in positions for k in (1, 2)], out
    assert len(restores) >= len(positions)  # the seeks'
    assert [restored for _, _, restored in steps] == [0] * len(where)
    expected = revloop.straight_states(where)
    assert [(icount, digest) for icount, digest, _ in steps] == [expected[n] for n in where]
