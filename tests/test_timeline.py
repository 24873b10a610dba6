"""The Timeline's Python API on real replays of gcc-built guests.

Every position it reaches is checked against a straight replay (registers and all of RAM), and
what its reverse searches find is checked against what running forward finds."""
from __future__ import annotations

import io
import random
import threading
from typing import Callable, Iterator, Optional

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from debugger.agentexpr import AgentExpr, BoundCondition, Condition
from debugger.console import load_symbols
from debugger.fanout import FanOut
from debugger.search import Hit
from debugger.tdesc import AMD64
from debugger.timeline import Stop, Timeline
from tests.conftest import run_urr
from tests.replays import Recording, recorded  # noqa: F401  (recorded is a fixture)
from urr.options import parse_args
from urr.session import Session


@pytest.fixture
def open_timeline(recorded) -> Iterator:  # noqa: F811
    """name -> a Timeline over a replay of that guest's recording (one per name and test: two
    replays adding to one catalog at once would thin each other's snapshots), closed after it."""
    opened: dict[str, tuple[Timeline, Recording]] = {}

    def make(name: str) -> tuple[Timeline, Recording]:
        if name not in opened:
            rec = recorded(name)
            opened[name] = Timeline.for_replay(rec.rrfile, rec.kernel, snapshot="init"), rec
        return opened[name]
    yield make
    for tl, _ in opened.values():
        tl.close()


def state(tl: Timeline) -> tuple[int, str]:
    """The position and a hash of all registers and RAM there."""
    return tl.icount, tl.session.state_hash()


def u64(data: bytes) -> int:
    return int.from_bytes(data, "little")


@pytest.mark.parametrize("name", ["corrupt", "ticks"])
def test_seek_reaches_the_state_of_a_straight_replay(open_timeline, name):
    """Random positions in random order (so backwards too); ticks spends most of its time halted,
    where a position is the end of the halt, as in a straight replay."""
    tl, rec = open_timeline(name)
    rng = random.Random(name)
    icounts = [rng.randrange(rec.icount) for _ in range(8)]
    expected = rec.straight_states(icounts)
    for n in icounts:
        stop = tl.seek(n)
        assert stop.reason == "step" and stop.icount == tl.icount >= n
        assert state(tl) == expected[n], f"seek({n})"


@pytest.mark.parametrize("name", ["corrupt", "ticks"])
def test_reverse_stepi_goes_back_one_instruction(open_timeline, name):
    """reverse-stepi is seek(icount - 1), except right after a halt where it is the HLT; either
    way stepi from there comes back to the same state (stepping into interrupt handlers, so
    that a step is one instruction: after a halt the position is the handler's first one)."""
    tl, rec = open_timeline(name)
    tl.step_into_interrupts = True
    rng = random.Random(f"{name}-rsi")
    for n in (rng.randrange(1, rec.icount) for _ in range(5)):
        tl.seek(n)
        here = state(tl)
        stop = tl.reverse_stepi()
        assert stop.reason == "step" and stop.icount < here[0]
        back = state(tl)
        if stop.icount != here[0] - 1:  # here ends a halt: we are on its HLT
            assert tl.seek(here[0] - 1).icount == here[0]
            assert tl.read_memory(stop.pc, 1) == b"\xf4"
        tl.seek(here[0] + 1000)
        assert tl.seek(back[0]).reason == "step" and state(tl) == back
        assert tl.stepi().reason == "step" and state(tl) == here


def test_begin_and_end_of_the_recording(open_timeline):
    tl, rec = open_timeline("hello")
    assert tl.icount == 0 and tl.pc() == rec.elf.entry
    stop = tl.reverse_stepi()
    assert (stop.reason, stop.icount, stop.pc) == ("begin", 0, rec.elf.entry)
    assert tl.reverse_cont().reason == "begin" and tl.icount == 0
    stop = tl.cont()
    assert (stop.reason, stop.icount, stop.exit_status) == ("end", rec.icount, rec.status)
    assert tl.stepi().reason == "end" and tl.cont().reason == "end" and tl.icount == rec.icount
    assert tl.reverse_stepi().icount == rec.icount - 1  # the end is a place to go back from
    assert tl.exit_status is None
    assert tl.stepi().reason == "end" and tl.exit_status == rec.status


def test_guest_output_is_passed_on_once(recorded):  # noqa: F811
    """Seeks and reverse searches replay code that wrote to the serial port and debugcon again;
    the user sees each byte once."""
    rec = recorded("hello")
    out = io.BytesIO()
    with Timeline.for_replay(rec.rrfile, rec.kernel, snapshot="init", out=out) as tl:
        tl.seek(rec.icount // 2)
        half = out.getvalue()
        assert 0 < len(half) < len(rec.output) and rec.output.startswith(half)
        tl.add_breakpoint(rec.elf.addr("kmain"))
        assert tl.reverse_cont().reason == "breakpoint"
        assert tl.seek(rec.icount // 3).reason == "step" and out.getvalue() == half
        assert tl.cont().reason == "end"
        tl.reverse_stepi()
        tl.cont()
    assert out.getvalue() == rec.output


def test_reverse_continue_stops_at_the_last_hit_before_here(open_timeline):
    """Two breakpoints and a replay breakpoint: going back visits exactly the stops that going
    forward made, in reverse order, then reaches the start."""
    tl, rec = open_timeline("corrupt")
    tl.add_breakpoint(rec.elf.addr("transfer"))
    tl.add_breakpoint(rec.elf.addr("journal_append"))
    forward: list[Stop] = [tl.cont() for _ in range(4)]
    tl.set_icount_break(forward[-1].icount + 5)
    forward.append(tl.cont())
    forward += [tl.cont() for _ in range(4)]
    assert [s.reason for s in forward] == ["breakpoint"] * 4 + ["icount-break"] + ["breakpoint"] * 4
    assert {s.pc for s in forward if s.reason == "breakpoint"} == {rec.elf.addr("transfer"),
                                                                   rec.elf.addr("journal_append")}
    backward = [tl.reverse_cont() for _ in forward[:-1]]
    assert [(s.reason, s.icount, s.pc) for s in backward] == [
        (s.reason, s.icount, s.pc) for s in reversed(forward[:-1])]
    tl.seek((forward[2].icount + forward[3].icount) // 2)  # between two hits
    stop = tl.reverse_cont()
    assert (stop.reason, stop.icount) == ("breakpoint", forward[2].icount)
    tl.seek(forward[0].icount)
    assert (tl.reverse_cont().reason, tl.icount, tl.pc()) == ("begin", 0, rec.elf.entry)


def test_replay_breakpoint_inside_a_halt(open_timeline):
    """ticks sleeps in HLT between timer interrupts: a replay breakpoint on an icount inside the
    halt stops at the halt's end, in both directions."""
    tl, rec = open_timeline("ticks")
    tl.step_into_interrupts = True  # a step from the HLT ends where the halt does
    hlt = next(i.address for i in rec.elf.code("kmain") if i.mnemonic == "hlt")
    tl.add_breakpoint(hlt)
    halted = tl.cont().icount
    woken = tl.stepi().icount
    assert woken > halted + 2
    tl.remove_breakpoint(hlt)
    tl.set_icount_break(halted + 2)
    tl.seek(halted - 10)
    assert (tl.cont().reason, tl.icount) == ("icount-break", woken)
    tl.seek(woken + 10)
    assert (tl.reverse_cont().reason, tl.icount) == ("icount-break", woken)


def test_watchpoints_forward_and_backward(open_timeline):
    """`total_checks` is written by check_books() every 50 ticks and once, wrongly, by
    journal_append(): backwards from the end a write watch stops at that culprit store."""
    tl, rec = open_timeline("corrupt")
    victim = rec.elf.addr("total_checks")
    tl.add_breakpoint(rec.elf.addr("kmain"))  # past crt0's clearing of .bss
    tl.cont()
    tl.remove_breakpoint(rec.elf.addr("kmain"))
    tl.add_watchpoint(victim, 8, "w")
    stop = tl.cont()
    assert (stop.reason, stop.watch_addr, stop.watch_kind) == ("watchpoint", victim, "w")
    assert rec.elf.function_at(tl.pc()) == "check_books"
    after = tl.read_memory(victim, 8)
    tl.reverse_stepi()
    assert u64(after) == u64(tl.read_memory(victim, 8)) + 1

    assert tl.seek(rec.icount).reason == "end"
    stop = tl.reverse_cont()
    assert (stop.reason, stop.watch_addr) == ("watchpoint", victim)
    assert rec.elf.function_at(stop.pc) == "journal_append"
    before = tl.read_memory(victim, 8)
    tl.stepi()
    assert tl.read_memory(victim, 8) != before
    culprit = stop.icount
    # A watch on the upper half alone: the 8-byte store starts before it and must still count.
    tl.remove_watchpoint(victim, 8, "w")
    tl.add_watchpoint(victim + 4, 4, "w")
    tl.seek(rec.icount)
    assert tl.reverse_cont().icount == culprit


def test_last_write_finds_the_culprit_and_stays_put(open_timeline):
    tl, rec = open_timeline("corrupt")
    victim = rec.elf.addr("total_checks")
    tl.add_breakpoint(rec.elf.addr("report_corruption"))
    assert tl.cont().reason == "breakpoint"
    # Another watchpoint, on a variable written at every transfer, must not be taken for a write.
    tl.add_watchpoint(rec.elf.addr("journal_next"), 4, "w")
    here, watches = state(tl), set(tl.watchpoints)
    icount, rip, old, new = tl.last_write(victim, 8)
    assert state(tl) == here and set(tl.watchpoints) == watches
    assert rec.elf.function_at(rip) == "journal_append"
    assert new == tl.read_memory(victim, 8) != old
    tl.seek(icount)
    assert (tl.pc(), tl.read_memory(victim, 8)) == (rip, old)
    tl.seek(icount + 1)
    assert tl.read_memory(victim, 8) == new
    tl.remove_watchpoint(rec.elf.addr("journal_next"), 4, "w")
    tl.add_watchpoint(victim, 8, "w")  # nothing writes it between there and the breakpoint
    assert (tl.cont().reason, tl.icount) == ("breakpoint", here[0])
    assert tl.last_write(rec.elf.addr("kmain"), 4) is None and state(tl) == here  # code: never written


def _call_site(rec: Recording) -> tuple[int, int]:
    """hello's `call debugcon_puts` in kmain: its address and the return address."""
    (call,) = rec.elf.calls("kmain", "debugcon_puts")
    return call.address, call.address + call.size


def test_next_and_reverse_next_step_over_a_call(open_timeline):
    tl, rec = open_timeline("hello")
    call, ret = _call_site(rec)
    tl.add_breakpoint(call)  # kept: the backward search must not stop at it
    at_call = tl.cont()
    rsp0 = tl.read_registers()["rsp"]
    while tl.pc() != ret:  # the reference: one instruction at a time
        tl.stepi()
    returned = state(tl)
    assert tl.seek(at_call.icount).reason == "step"
    assert tl.next().reason == "step" and state(tl) == returned and tl.read_registers()["rsp"] == rsp0
    assert tl.reverse_next().reason == "step" and (tl.icount, tl.pc()) == (at_call.icount, call)
    # Where the instruction before is not a ret (a pop), reverse-next is reverse-stepi.
    pop = next(i for i in rec.elf.code("kmain") if i.mnemonic == "pop")
    tl.add_breakpoint(pop.address + pop.size)
    stop = tl.cont()
    assert tl.reverse_next().icount == stop.icount - 1 and tl.pc() == pop.address


def test_next_and_reverse_next_stop_at_breakpoints_inside_the_call(open_timeline):
    """A breakpoint on debugcon_puts' `out` (one hit per character): next stops at the first hit,
    reverse-next from the return address at the last."""
    tl, rec = open_timeline("hello")
    call, ret = _call_site(rec)
    out = next(i.address for i in rec.elf.code("debugcon_puts") if i.mnemonic == "out")
    tl.add_breakpoint(call)
    at_call = tl.cont()
    tl.add_breakpoint(out)
    tl.add_breakpoint(ret)
    first = tl.next()
    assert (first.reason, first.pc) == ("breakpoint", out) and first.icount > at_call.icount
    hits = [first]
    while (stop := tl.cont()).pc == out:  # the reference: from hit to hit
        hits.append(stop)
    assert stop.pc == ret and len(hits) > 1
    stop = tl.reverse_next()
    assert (stop.reason, stop.icount, stop.pc) == ("breakpoint", hits[-1].icount, out)


@pytest.mark.parametrize("direction", ["cont", "reverse_cont"])
def test_interrupt_stops_a_run_from_another_thread(open_timeline, direction):
    """What the GDB stub does on Ctrl-C: interrupt() until the run returns (a run clears
    interrupts when it starts). With no breakpoints it would otherwise reach the end or start."""
    tl, rec = open_timeline("corrupt")
    if direction == "reverse_cont":
        tl.seek(rec.icount)
    start = tl.icount
    result: list[Stop] = []
    runner = threading.Thread(target=lambda: result.append(getattr(tl, direction)()))
    runner.start()
    while runner.is_alive():
        tl.interrupt()
        runner.join(0.001)
    (stop,) = result
    assert stop.reason == "interrupt"
    assert start < stop.icount < rec.icount if direction == "cont" else 0 < stop.icount <= start
    assert (stop.icount, stop.pc) == (tl.icount, tl.pc())


def test_record_mode_refuses_reverse_and_runs_forward(recorded, tmp_path):  # noqa: F811
    rec = recorded("hello")
    opts = parse_args(["-kernel", rec.kernel, "-serial", "none", "-icount",
                       f"shift=7,rr=record,rrfile={tmp_path / 'again.rr'}"])
    session = Session(opts, out=io.BytesIO(), stdin_fd=None)
    tl = Timeline(session.machine, session.snapshots, False)
    try:
        tl.add_breakpoint(rec.elf.addr("kmain"))
        assert (tl.cont().reason, tl.pc()) == ("breakpoint", rec.elf.addr("kmain"))
        for reverse in (tl.reverse_stepi, tl.reverse_cont, lambda: tl.seek(1)):
            with pytest.raises(ValueError, match="needs a replay"):
                reverse()
        assert tl.stepi().icount == tl.icount
        stop = tl.cont()
        assert (stop.reason, stop.icount, stop.exit_status) == ("exited", rec.icount, rec.status)
    finally:
        session.close(tl.exit_status, "test")


# Watched spans for the write-index property test: name -> (symbol or None for the stack, size).
_WATCHED = {"revloop": ["seed_copy", "heartbeat", "timer_ticks", "data", None],
            "corrupt": ["total_checks", "journal_next", "ticks", "audit_hash", None]}


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_searches_through_the_write_index_match_a_full_scan(open_timeline, data):
    """last-write, and continue and reverse-continue to a write watchpoint, replay only the
    digest intervals in which the watched pages may have been written; on random addresses
    (globals written once, every round with the same value, at every tick, the stack) and
    positions they must find exactly what replaying everything finds."""
    name = data.draw(st.sampled_from(sorted(_WATCHED)), label="guest")
    tl, rec = open_timeline(name)
    symbol = data.draw(st.sampled_from(_WATCHED[name]), label="symbol")
    position = 1 + data.draw(st.integers(0, 999), label="permille") * (rec.icount - 1) // 1000
    here = tl.seek(position).icount
    base = tl.read_registers()["rsp"] - 64 if symbol is None else rec.elf.addr(symbol)
    addr = base + data.draw(st.integers(-8, 24), label="offset")
    length = data.draw(st.integers(1, 16), label="length")
    found = {}
    for indexed in (True, False):
        tl.search.use_write_index = indexed
        tl.seek(here)
        last = tl.last_write(addr, length)
        assert tl.icount == here
        tl.add_watchpoint(addr, length, "w")
        back = tl.reverse_cont()
        tl.seek(here)
        forward = [tl.cont() for _ in range(2)]
        tl.remove_watchpoint(addr, length, "w")
        found[indexed] = (last, [(s.reason, s.icount) for s in [back, *forward]])
    assert found[True] == found[False]
    last, stops = found[True]
    assert last is None or (last[0], "watchpoint") == (stops[0][1], stops[0][0])  # the same write


@pytest.mark.parametrize("name", ["revloop", "ticks"])
def test_repeated_reverse_steps_match_a_straight_replay(open_timeline, name):
    """Steps back one at a time are served from checkpoints and an undo record of the stretch
    before (debugger.checkpoints): through timer interrupts (their frames undone too), halts
    (ticks sleeps between ticks), and past the start of one recorded stretch into the next. Each
    position reached, and the state there, is what a straight replay has."""
    from replay import log as L
    tl, rec = open_timeline(name)
    irqs = [r.icount for r in tl.machine.seam.core.player.records if r.kind == L.IRQ]
    start = irqs[len(irqs) // 2] + 40  # a little after an interrupt was delivered
    tl.seek(start)
    visited = [tl.icount]
    for _ in range(4500 if name == "revloop" else 300):
        stop = tl.reverse_stepi()
        assert stop.reason == "step" and stop.icount == tl.icount < visited[-1]
        visited.append(tl.icount)
    if name == "revloop":  # it never halts: one instruction at a time
        assert visited == list(range(start, start - len(visited), -1))
    checked = visited[::97] + visited[-3:]
    expected = rec.straight_states(checked)
    assert tl.icount == visited[-1] and state(tl) == expected[visited[-1]]
    for n in checked:
        assert tl.seek(n).reason == "step" and state(tl) == expected[n], f"state at {n}"
    # And the same positions reached one step back at a time, checked as they are reached.
    tl.seek(start)
    for n in visited[1:200]:
        tl.reverse_stepi()
        if n in expected:
            assert state(tl) == expected[n], f"reverse step to {n}"


def test_steps_go_through_interrupt_handlers_unless_asked_not_to(open_timeline):
    """As QEMU's stub: a step after which the timer interrupt is delivered completes through
    the handler, and stepping back from the instruction after the handler's return lands before
    the interrupt; with step_into_interrupts both stop in the handler."""
    from replay import log as L
    tl, rec = open_timeline("revloop")
    irqs = [r.icount for r in tl.machine.seam.core.player.records if r.kind == L.IRQ]
    delivered = irqs[len(irqs) // 3]
    tl.seek(delivered)
    handler, frame = tl.pc(), tl.read_memory(tl.read_registers()["rsp"], 32)
    interrupted, interrupted_rsp = u64(frame[:8]), u64(frame[24:])
    before = tl.seek(delivered - 1)
    assert rec.elf.function_at(before.pc) in ("churn", "kmain")
    stop = tl.stepi()
    assert (stop.reason, stop.pc) == ("step", interrupted) and stop.icount > delivered + 10
    assert tl.read_registers()["rsp"] == interrupted_rsp
    returned = stop.icount
    back = tl.reverse_stepi()
    assert (back.reason, back.icount, back.pc) == ("step", delivered - 1, before.pc)
    tl.step_into_interrupts = True
    assert (tl.stepi().icount, tl.pc()) == (delivered, handler)
    tl.seek(returned)
    stop = tl.reverse_stepi()
    assert stop.icount == returned - 1 and tl.read_memory(tl.pc(), 2) == b"\x48\xcf"  # iretq


def test_next_passes_breakpoints_whose_condition_is_false(open_timeline):
    """next over a call stops inside it only at a breakpoint whose condition holds, and at the
    return address reports a breakpoint of the user's there only if its condition holds (which
    it keeps afterwards)."""
    tl, rec = open_timeline("hello")
    call, ret = _call_site(rec)
    entry = rec.elf.addr("debugcon_puts")
    out = next(i.address for i in rec.elf.code("debugcon_puts") if i.mnemonic == "out")
    tl.add_breakpoint(call)
    at_call = tl.cont()
    tl.remove_breakpoint(call)
    tl.add_breakpoint(entry, lambda: False)
    tl.add_breakpoint(out, lambda: False)
    tl.add_breakpoint(ret, lambda: False)
    stop = tl.next()
    assert (stop.reason, stop.pc) == ("step", ret) and stop.icount > at_call.icount + 2
    assert tl.break_conditions[ret] is not None and not tl.break_conditions[ret]()
    tl.seek(at_call.icount)
    tl.add_breakpoint(ret, lambda: True)
    assert tl.next().reason == "breakpoint" and tl.pc() == ret
    tl.seek(at_call.icount)
    tl.add_breakpoint(entry, lambda: tl.read_register("rsp") > 0)
    assert (tl.next().reason, tl.pc(), tl.icount) == ("breakpoint", entry, at_call.icount + 1)


@pytest.fixture
def sparse(recorded, tmp_path) -> tuple[Recording, str]:  # noqa: F811
    """revloop's recording again with snapshots 100 ms apart (a replay takes them 10 ms apart):
    (the Recording, the new rrfile)."""
    rec = recorded("revloop")
    rrfile = str(tmp_path / "sparse.rr")
    run_urr("-kernel", rec.kernel, "-serial", "none", "-snapshots", "100ms", "-icount",
            f"shift=7,rr=record,rrfile={rrfile},rrsnapshot=init")
    return rec, rrfile


def test_a_seek_takes_periodic_snapshots_only_near_where_it_lands(sparse):
    """A seek passing through many snapshot intervals on its way takes a periodic snapshot only
    in the last one before its target (each costs a capture); the state it lands in is a
    straight replay's all the same."""
    rec, rrfile = sparse
    with Timeline.for_replay(rrfile, rec.kernel, snapshot="init") as tl:
        interval = tl.snapshots.interval
        target = sorted(i.icount for i in tl.snapshots.infos.values())[-2] - 2000  # far from the one before
        origin = tl.snapshots.nearest(target - 1024).icount
        assert target - origin > 3 * interval  # the seek crosses several grid points
        before = set(tl.snapshots.infos)
        assert tl.seek(target).reason == "step"
        taken = [i.icount for name, i in tl.snapshots.infos.items() if name not in before]
        assert taken and all(target - interval <= n <= target for n in taken), (taken, target, interval)
        assert state(tl) == rec.straight_states([target])[target]
        assert tl.snapshots.hold_until == 0
        tl.snapshots.restore(tl.snapshots.nearest(origin).name)  # a replay on from there, not a seek,
        tl.cont()  # takes them all
        grid = {i.icount // interval for i in tl.snapshots.infos.values() if i.kind == "periodic"}
        assert set(range(origin // interval + 1, target // interval)) <= grid


def test_a_reverse_search_takes_and_deletes_no_snapshots_on_its_way(sparse):
    """A reverse-continue replays stretches it then leaves: it takes periodic snapshots only in
    the last interval before the hit it lands on, and thins none (thinning at the search's
    position would delete the dense snapshots where the user works)."""
    rec, rrfile = sparse
    with Timeline.for_replay(rrfile, rec.kernel, snapshot="init") as tl:
        interval = tl.snapshots.interval
        end = sorted(i.icount for i in tl.snapshots.infos.values())[-1] - 2000
        tl.seek(end)
        before = set(tl.snapshots.infos)
        tl.add_breakpoint(load_symbols(rec.kernel)["pit_init"])
        stop = tl.reverse_cont()
        assert stop.reason == "breakpoint" and end - stop.icount > 5 * interval
        taken = [i.icount for name, i in tl.snapshots.infos.items() if name not in before]
        assert all(stop.icount - interval <= n <= stop.icount for n in taken), (taken, stop.icount, interval)
        assert before <= set(tl.snapshots.infos)
        assert state(tl) == rec.straight_states([stop.icount])[stop.icount]


def test_reverse_continue_fanned_out_over_workers_finds_what_the_forward_run_finds(open_timeline):
    """A reverse search to breakpoints spread over worker processes (debugger.fanout; made to
    fan out after its first stretch here) stops exactly where the forward run stopped last
    before the position, from positions just past snapshots (so the hit lies in the stretches
    the workers replay)."""
    tl, rec = open_timeline("corrupt")
    tl.add_breakpoint(rec.elf.addr("transfer"))
    tl.add_breakpoint(rec.elf.addr("journal_append"))
    hits = []
    while (stop := tl.cont()).reason == "breakpoint":
        hits.append((stop.icount, stop.pc))
    snapshots = sorted(i.icount for i in tl.snapshots.infos.values())
    after = sorted({next(s for s in snapshots if s > h) + 1 for h, _ in hits if h < snapshots[-1]})
    positions = [after[0], after[len(after) // 2], after[-1]]  # the searches fork workers: a few
    fanned: list[tuple[int, int]] = []
    fan_out = FanOut(tl.snapshots, rec.rrfile, 2).last_hit

    def counted(breaks: frozenset[int], first: int, last: int, interrupted: Callable[[], bool]) -> Optional[Hit]:
        fanned.append((first, last))
        return fan_out(breaks, first, last, interrupted)
    tl.search.fan_out, tl.search.fan_out_after, tl.search.fan_out_min = counted, 0, 0
    for position in positions:
        tl.seek(position)
        stop = tl.reverse_cont()
        expected = max(h for h in hits if h[0] < position)
        assert (stop.reason, stop.icount, stop.pc) == ("breakpoint", *expected)
        assert state(tl) == rec.straight_states([stop.icount])[stop.icount]
    assert len(fanned) >= 2  # searches went to the workers (one may find its hit before)


def test_an_interrupted_fanned_out_search_stops_its_workers_at_once(open_timeline):
    """Ctrl-C during a reverse search spread over workers is answered while they replay, not
    after their batch (up to ~9 s of replay): the search ends where it began, having searched
    nothing, and no worker is left running."""
    import multiprocessing
    tl, rec = open_timeline("corrupt")
    tl.cont()
    last = max(i.icount for i in tl.snapshots.infos.values())
    before = len(multiprocessing.active_children())  # the catalog writer's
    asked: list[int] = []

    def interrupted() -> bool:
        asked.append(len(multiprocessing.active_children()))
        return True
    hit = FanOut(tl.snapshots, rec.rrfile, 2).last_hit({0x10: None}, tl.start, last, interrupted)
    assert (hit.reason, hit.icount) == ("interrupt", last)  # not a batch's start: none finished
    assert asked == [before + 2]  # asked once, while both workers ran
    assert len(multiprocessing.active_children()) == before  # and they are gone


def test_a_fanned_out_search_evaluates_gdbs_conditions_in_the_workers(open_timeline):
    """A breakpoint whose condition is GDB's bytecode (here `($rdi & 1) != 0`) is searched for
    in the worker processes too, which evaluate the condition against their own machine: the
    reverse search stops exactly where the forward run with the same condition stopped."""
    tl, rec = open_timeline("corrupt")
    addr = rec.elf.addr("transfer")
    registers = [(r.machine_name, r.bits, bool(r.source)) for r in AMD64.registers]
    odd_rdi = Condition([AgentExpr(bytes.fromhex("260005220 10F27".replace(" ", "")), lambda n: 64)], registers)
    everywhere = []
    tl.add_breakpoint(addr)
    while (stop := tl.cont()).reason == "breakpoint":
        everywhere.append(stop.icount)
    tl.seek(0)
    tl.add_breakpoint(addr, BoundCondition(odd_rdi, tl.read_register, tl.read_memory))
    hits = []
    while (stop := tl.cont()).reason == "breakpoint":
        hits.append(stop.icount)
    assert 0 < len(hits) < len(everywhere)  # the condition holds at some hits, not all
    fanned: list[dict] = []
    fan_out = FanOut(tl.snapshots, rec.rrfile, 2).last_hit

    def counted(breaks: dict, first: int, last: int, interrupted: Callable[[], bool]) -> Optional[Hit]:
        fanned.append(breaks)
        return fan_out(breaks, first, last, interrupted)
    tl.search.fan_out, tl.search.fan_out_after, tl.search.fan_out_min = counted, 0, 0
    snapshots = sorted(i.icount for i in tl.snapshots.infos.values())
    after = sorted({next(s for s in snapshots if s > h) + 1 for h in hits if h < snapshots[-1]})
    for position in (after[0], after[len(after) // 2], after[-1]):
        tl.seek(position)
        stop = tl.reverse_cont()
        assert (stop.reason, stop.icount) == ("breakpoint", max(h for h in hits if h < position))
    assert fanned and all(b[addr] is odd_rdi for b in fanned)
