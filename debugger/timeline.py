"""Navigation over a replay: one object owns the position, the snapshots and the breakpoints.

Modelled on rr's ReplayTimeline. Forward execution runs the machine with breakpoint and
watchpoint hooks that stop it (debugger.stoppoints). Going back is "restore the nearest earlier
snapshot, replay forward": a seek backwards replays to the target; repeated reverse steps are
served from the checkpoints and undo record of the stretch before the position (debugger.checkpoints);
reverse-continue and last-write replay the stretches before the position with hooks that only
*collect* hits, newest first, skipping what cannot hold a hit (debugger.search; last-write and
the writes the recording's debugger made: debugger.writes). Steps go through interrupt handlers
unless `step_into_interrupts` is set (debugger.interruptsteps).

Positions are icounts. Inside a halt (HLT until an interrupt) there are no instructions, so a
position there is the end of the halt: seek() lands on it and reverse_stepi() steps back to the
HLT itself. Guest output (serial, debugcon) is passed on only the first time execution produces
it, not again when a seek or a reverse search replays it.

Usable from scripts:

    with Timeline.for_replay("run.rr", "guest.elf", snapshot="init") as tl:
        tl.add_breakpoint(0x100123)
        stop = tl.cont()             # Stop(reason="breakpoint", icount=..., pc=0x100123)
        stop = tl.reverse_stepi()    # one instruction back
        tl.seek(1_000_000)           # anywhere, backwards or forwards
        icount, rip, old, new = tl.last_write(0x104140, 8)
"""
from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Callable, Optional

from unicorn.x86_const import UC_X86_REG_RSP as _RSP

from cpu.machine import GuestError, Machine, Stop as MachineStop
from debugger.agentexpr import BoundCondition, Condition
from debugger.checkpoints import StepCache
from debugger.fanout import FanOut
from debugger.interruptsteps import InterruptSteps
from debugger.rangestep import range_exits
from debugger.search import FORWARD_RESTORE_MIN, Hit, ReverseSearch
from debugger.stateview import StateView
from debugger.stoppoints import StopPoints
from debugger.writes import Writes
from history.runner import default_jobs
from replay.player import Divergence
from snapshots.manager import SnapshotManager
from snapshots.writeindex import WriteIndex

if TYPE_CHECKING:
    from urr.session import Session

RUN_CHUNK = 1 << 21  # forward runs check for Ctrl-C this often (in icounts)
# A seek that restores a snapshot (a reverse step outside the stretch kept for fast steps is
# one) records this many instructions before its target; each further stretch, as the user keeps
# stepping back, twice as long, up to STEP_SPAN_MAX.
STEP_SPAN = 1 << 10
STEP_SPAN_MAX = 1 << 16


@dataclass
class Stop:
    """Where and why a Timeline operation stopped.

    reason: "step" (a step or seek finished), "breakpoint", "watchpoint", "icount-break" (a replay
    breakpoint), "begin" / "end" (the start or end of the recording; at the end of a replay whose
    guest exited, exit_status is set), "exited" (the guest exited, record mode), "interrupt",
    "fault" (a guest fault or replay divergence, in message). A watchpoint stop at a write the
    debugger made while recording says so in message (such a write is made between instructions:
    going forward the stop is right after it, going back right before it, at its icount)."""

    reason: str
    icount: int
    pc: int
    watch_addr: Optional[int] = None
    watch_kind: Optional[str] = None
    exit_status: Optional[int] = None
    message: str = ""


class Timeline(StateView):
    """The position in a run, moved forwards and (in a replay) backwards; see the module doc."""

    def __init__(self, machine: Machine, snapshots: Optional[SnapshotManager], replaying: bool) -> None:
        super().__init__(machine, replaying)
        self.snapshots = snapshots
        self.can_reverse = replaying and snapshots is not None
        if replaying and snapshots is not None:
            snapshots.expect_restores()
        self.start = machine.icount
        self.session: Optional[Session] = None  # the replay underneath, when for_replay made it
        self.points = StopPoints(machine, self.read_register, self.read_memory)
        # Its tables, as the Timeline has always shown them (the same objects, changed in place).
        self.breakpoints, self.break_conditions = self.points.breakpoints, self.points.break_conditions
        self.watchpoints, self.changes_only = self.points.watchpoints, self.points.changes_only
        self.icount_breaks = self.points.icount_breaks
        self._interrupt = threading.Event()
        # Asked too where runs check for interrupt(), when set: the GDB stub reads its socket for
        # Ctrl-C there rather than keep a thread watching it.
        self.interrupt_poll: Optional[Callable[[], bool]] = None
        self._exited: Optional[MachineStop] = None
        self.failure: Optional[Exception] = None  # the guest fault or divergence a run last stopped at
        self.furthest = self.start  # guest output before this icount has been passed on already
        self.search = ReverseSearch(machine, self.start, self._restore_before, self._collect_to, self._take_interrupt)
        jobs = default_jobs()
        if self.can_reverse and jobs > 1:
            assert snapshots is not None
            self.search.fan_out = FanOut(snapshots, machine.seam.core.player.reader.path, jobs).last_hit
        self.steps = StepCache(machine, SnapshotManager.OWN_TIMERS,
                               snapshots.arm if snapshots is not None else lambda: None)
        self._step_span = STEP_SPAN  # the length of the stretch the step cache was built for
        self.interrupt_steps = InterruptSteps(self)  # steps go through interrupt handlers
        self.writes = Writes(self)  # last-write, and the writes the recording's debugger made
        # The host's sinks are gated, not the devices' outputs: the machine hashes all output.
        machine.serial_out = self._first_time(machine.serial_out)
        machine.debugcon_out = self._first_time(machine.debugcon_out)
        if snapshots is not None and snapshots.nearest(self.start) is None:
            snapshots.take("start", "initial")

    @classmethod
    def for_replay(cls, rrfile: str, kernel: str, snapshot: Optional[str] = None,
                   out: Optional[BinaryIO] = None) -> "Timeline":
        """A timeline over a replay of `rrfile` (RAM size and shift from its header), starting at
        the named snapshot or at boot; guest serial and debugcon output go to `out`."""
        from replay.log import LogReader
        from urr.options import Options
        from urr.session import Session

        config = LogReader(rrfile).config
        opts = Options(kernel=kernel, ram_size=config["ram_size"], shift=config["shift"], rr="replay",
                       rrfile=rrfile, rrsnapshot=snapshot, debugger=True)
        session = Session(opts, out=out if out is not None else io.BytesIO(), stdin_fd=None)
        timeline = cls(session.machine, session.snapshots, True)
        timeline.session = session
        return timeline

    def close(self) -> None:
        """End the session for_replay opened (writes out its snapshot catalog; a branch's log
        ends with the guest's exit status if the position is at its exit)."""
        if self.session is not None:
            self.session.close(self.exit_status, "timeline closed")
            self.session = None

    def branch(self, rrfile: str, overwrite: bool = False) -> str:
        """Leave the replay here and go on recording into `rrfile` (urr.branch.go_live); returns
        what was done, in one line. Needs the session underneath (for_replay's or the launcher's)."""
        if self.session is None:
            raise ValueError("branching needs the session this timeline replays")
        from urr.branch import go_live

        return go_live(self.session, self, rrfile, overwrite)

    def went_live(self, snapshots: Optional[SnapshotManager]) -> None:
        """The machine records from here on (a branch): forwards only, with the branch's catalog;
        whatever the guest prints from here is new."""
        self.snapshots = snapshots
        self.replaying = self.can_reverse = False
        self.furthest = self.icount
        self.steps.clear()  # what they knew was the parent recording's
        self.search.forget()
        self.interrupt_steps.forget()

    def __enter__(self) -> "Timeline":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _first_time(self, output: Callable[[bytes], None]) -> Callable[[bytes], None]:
        """`output`, passing on only bytes written at or past the furthest position reached:
        seeks and reverse searches replay code that the user has seen print already."""
        def gated(data: bytes) -> None:
            if self.machine.now() >= self.furthest:
                output(data)
        return gated

    # -- state --------------------------------------------------------------------------------

    @property
    def step_into_interrupts(self) -> bool:
        """As QEMU's stub by default (False): a step during which the guest takes an interrupt
        goes on through the handler (forwards and backwards); True stops in handlers instead."""
        return self.interrupt_steps.into

    @step_into_interrupts.setter
    def step_into_interrupts(self, on: bool) -> None:
        self.interrupt_steps.into = on

    @property
    def icount(self) -> int:
        return self.machine.icount

    @property
    def exit_status(self) -> Optional[int]:
        """The guest's exit status once the position is at its exit, else None."""
        return self._exited.status if self._exited is not None else None

    def _state_changed(self) -> None:
        """The debugger wrote to the machine's state here."""
        self.steps.clear()  # what they kept is the state before the write
        self.failure = None  # the fault a run stopped at here may not be met again
        if self.off_recording and self.snapshots is not None:
            self.snapshots.pause()

    def _back_on_recording(self) -> None:
        """A snapshot (always one of the recording) was restored."""
        self.machine.seam.debugger.back_on_recording()

    # -- breakpoints and watchpoints (debugger.stoppoints) -------------------------------------

    def add_breakpoint(self, addr: int, condition: Optional[Callable[[], bool]] = None) -> None:
        """Stop at `addr`, where `condition` (if given) holds (StopPoints.add_breakpoint)."""
        self.points.add_breakpoint(addr, condition)

    def remove_breakpoint(self, addr: int) -> None:
        self.points.remove_breakpoint(addr)

    def add_watchpoint(self, addr: int, length: int, kind: str, changes_only: bool = False) -> None:
        """Stop on "w" writes, "r" reads or "a" both of [addr, addr+length) (StopPoints.add_watchpoint)."""
        self.points.add_watchpoint(addr, length, kind, changes_only)

    def remove_watchpoint(self, addr: int, length: int, kind: str) -> None:
        self.points.remove_watchpoint(addr, length, kind)

    def set_icount_break(self, icount: int) -> None:
        self.icount_breaks.add(icount)

    def clear_icount_breaks(self) -> None:
        self.icount_breaks.clear()

    # -- running the machine ------------------------------------------------------------------

    def _advance(self, until: Optional[int]) -> MachineStop:
        try:
            return self.machine.run(until)
        finally:
            self.furthest = max(self.furthest, self.machine.icount)

    def _replay_to(self, until: int) -> tuple[MachineStop, list[Hit]]:
        """Run to `until` with breakpoints and watchpoints only collecting their hits."""
        saved, self.points.collect = self.points.collect, []
        try:
            stop = self._advance(until)
        finally:
            hits, self.points.collect = self.points.collect, saved
        return stop, hits

    def _collect_to(self, until: int) -> list[Hit]:
        """A reverse search's replay: it takes no snapshots (see SnapshotManager.held)."""
        if self.snapshots is None:
            return self._replay_to(until)[1]
        with self.snapshots.held():
            return self._replay_to(until)[1]

    def _take_interrupt(self) -> bool:
        """Whether interrupt() was called or interrupt_poll says so (then cleared: it is answered)."""
        asked = self._interrupt.is_set() or (self.interrupt_poll is not None and self.interrupt_poll())
        self._interrupt.clear()
        return asked

    def _stop(self, reason: str, **kw) -> Stop:
        return Stop(reason, self.icount, self.pc(), **kw)

    def _ended(self, stop: MachineStop) -> Stop:
        """The machine cannot go on: in a replay, the end of the recording (a place to go back
        from, whether or not the guest exited there); in a recording, the guest's exit."""
        if stop.reason == "exit":
            self._exited = stop
        if self.off_recording:  # the recording's end or exit, reached from another state
            return self._stop("fault", message=str(self.divergence()))
        reason = "end" if self.replaying else "exited"
        return self._stop(reason, exit_status=stop.status, message=stop.message)

    # -- forward ------------------------------------------------------------------------------

    def interrupt(self) -> None:
        """Thread-safe: ask a running cont/reverse_cont to stop soon."""
        self._interrupt.set()

    def _run(self, until: Optional[int], ignore_here: bool) -> Stop:
        """Run forward to `until` (or the end), stopping at breakpoints, watchpoints, exit."""
        if self._exited is not None:
            return self._ended(self._exited)
        self.points.ignore_break_at = self.icount if ignore_here else None
        self.points.pending = None
        try:
            while True:
                if until is None:
                    self._skip_to_writes()
                chunk_end = self.icount + RUN_CHUNK
                limit = chunk_end if until is None else min(until, chunk_end)
                icount_break = min((b for b in self.icount_breaks if b > self.icount), default=None)
                if icount_break is not None:
                    limit = min(limit, icount_break)
                try:
                    stop = self._advance(limit)
                except Exception as e:  # a guest fault or divergence ends the run here
                    return self._fault(e)
                if stop.reason == "limit":
                    if until is not None and self.icount >= until:
                        return self._stop("step")
                    if icount_break is not None and self.icount >= icount_break:  # >=: a halt jumps
                        return self._stop("icount-break")
                    if self._take_interrupt():
                        return self._stop("interrupt")
                    continue
                if stop.reason == "breakpoint":
                    return self._stop("breakpoint")
                if stop.reason == "range-exit":
                    return self._stop("step")
                if stop.reason == "watchpoint":
                    hit = self.points.pending
                    if hit is None:
                        return self._stop("watchpoint")
                    return self._stop("watchpoint", watch_addr=hit.addr, watch_kind=hit.kind,
                                      message=self.writes.logged_text(hit))
                return self._ended(stop)
        finally:
            self.points.ignore_break_at = None

    def _fault(self, error: Exception) -> Stop:
        """A guest fault or divergence ended a run here; off the recording, the change made is
        its cause."""
        self.failure = self.divergence() if self.off_recording else error
        return self._stop("fault", message=str(self.failure))

    def _watched_pages(self) -> Optional[set[int]]:
        """The pages of the watchpoints when every place a run may stop is a write watchpoint
        (or a replay breakpoint) and the log's digests list every page written: then only the
        intervals that wrote those pages need to run with hooks. Else None (also during a range
        step, which stops where the PC leaves its range)."""
        if (self.search.exact_index() is None or self.breakpoints or self.points.range is not None
                or not self.watchpoints or any(kind != "w" for _, _, kind in self.watchpoints)):
            return None
        return set().union(*(WriteIndex.pages_of(a, n) for a, n, _ in self.watchpoints))

    def _skip_to_writes(self) -> None:
        """Running to a write watchpoint: jump (by a snapshot) over stretches in which no
        watched page was written and no replay breakpoint lies."""
        pages = self._watched_pages()
        if pages is None or self.snapshots is None:
            return
        first = self.search.next_writes(pages, self.icount, self.icount_breaks)
        if first is not None and first >= self.icount + FORWARD_RESTORE_MIN:
            self._restore_ahead(first)

    def _restore_ahead(self, icount: int) -> bool:
        """Restore the latest snapshot at or before `icount` if it is far enough ahead of here
        to be worth it (guest output of the stretch skipped is not shown); whether it did."""
        assert self.snapshots is not None
        info = self.snapshots.nearest(icount)
        if info is not None and info.icount >= self.icount + FORWARD_RESTORE_MIN:
            self.snapshots.restore(info.name)
            self._back_on_recording()
            return True
        return False

    def stepi(self) -> Stop:
        """One instruction; if an interrupt is delivered after it, on through the handler to the
        interrupted code (unless step_into_interrupts)."""
        self.interrupt_steps.delivered = None
        return self.interrupt_steps.step_through(self._run(self.icount + 1, ignore_here=True))

    def cont(self) -> Stop:
        self._interrupt.clear()
        self.points.drop_idle_code_hooks()
        return self._run(None, ignore_here=True)

    def next(self) -> Stop:
        """One instruction, stepping over a call: to its return with the stack back where it was,
        unless a breakpoint (whose condition holds) or a watchpoint inside the call stops it first."""
        insn = self._insn()
        if insn is None or insn.mnemonic != "call":
            return self.stepi()
        rsp0, ret = self._rsp(), insn.address + insn.size
        users = ret in self.breakpoints  # a breakpoint of the user's there, and its condition:
        condition = self.break_conditions.get(ret)
        self.add_breakpoint(ret)  # unconditional while the call runs
        try:
            stop = self.stepi()
            while stop.reason in ("step", "breakpoint"):
                if stop.pc == ret and self._rsp() >= rsp0:
                    return self._stop("breakpoint" if users and (condition is None or condition()) else "step")
                if stop.pc != ret and (stop.reason == "breakpoint" or self.points.break_holds(stop.pc)):
                    return self._stop("breakpoint")  # the user's, inside the call
                stop = self.cont()
            return stop
        finally:
            if users:
                self.add_breakpoint(ret, condition)
            else:
                self.remove_breakpoint(ret)

    def step_range(self, start: int, end: int) -> Stop:
        """Step until the PC leaves [start, end) (at least one instruction), in one run: GDB's
        range stepping (`vCont;r`), which `next` and `step` use over a source line. Breakpoints,
        watchpoints and interrupt() stop it as they stop cont; an interrupt handler taken inside
        runs through. Exits are found by hooks where the range can be left (debugger.rangestep),
        not by a hook per instruction. From outside the range: one step, then on if it is inside.
        With step_into_interrupts it single-steps, to stop in a handler taken inside."""
        self._interrupt.clear()
        if self.step_into_interrupts:
            stop = self.stepi()
            while stop.reason == "step" and start <= stop.pc < end:
                if self._take_interrupt():
                    return self._stop("interrupt")
                stop = self.stepi()
            return stop
        ignore_here = True
        if not start <= self.pc() < end:
            stop = self.stepi()
            if stop.reason != "step" or not start <= stop.pc < end:
                return stop
            ignore_here = False  # a breakpoint where the step arrived stops there
        code = self.read_memory(start, min(end + 15, self.machine.ram.size) - start)  # + the longest insn
        self.points.range = range_exits(code, start, end)
        try:
            for addr in self.points.range.entries | self.points.range.indirect.keys():
                self.points.code_hook(addr)
            return self._run(None, ignore_here=ignore_here)
        finally:
            self.points.range = None

    # -- backward -----------------------------------------------------------------------------

    def _require_reverse(self) -> None:
        if not self.can_reverse:
            raise ValueError(self.reverse_refusal())

    def reverse_refusal(self) -> str:
        """Why going back is refused here, in one line ("" where it is not): a branch says where
        its recording went, since the debugger that branched still offers reverse commands."""
        if self.can_reverse:
            return ""
        parent = self.session.config.get("parent") if self.session is not None and not self.replaying else None
        if isinstance(parent, dict):
            return (f"reverse execution needs a replay: from icount {parent.get('icount')} this run records "
                    f"into {self.session.opts.rrfile}, a branch of {parent.get('rrfile')} (replay either to go back)")
        this = "this replay has none" if self.replaying else "this is a recording"
        return f"reverse execution needs a replay (rr=replay) with a snapshot catalog; {this}"

    def _restore_before(self, icount: int) -> int:
        """Restore the latest snapshot at or before `icount` (never before the start)."""
        assert self.snapshots is not None
        info = self.snapshots.nearest(max(icount, self.start))
        if info is None:
            raise ValueError(f"no snapshot at or before icount {icount}")
        self.snapshots.restore(info.name)
        self._back_on_recording()
        self._exited = None
        return info.icount

    def seek(self, icount: int) -> Stop:
        """Go to `icount`: restore the nearest snapshot at or before it, replay forward. Lands on
        exactly `icount`, except inside a halt (on its end) or past the end of the recording.

        A seek that restores a snapshot keeps checkpoints and an undo record of the last
        STEP_SPAN instructions on its way (restoring one before that stretch if need be): the
        first step back from where it lands is then as cheap as the following ones. A seek to
        here in a replay the debugger changed returns to the recorded state here."""
        if icount < self.icount or self._exited is not None or (icount == self.icount and self.off_recording):
            self._require_reverse()
            if self.steps.covers(icount):
                self._exited = None
                self.steps.rewind(icount, self._replay_to)
                return self._stop("step")
            self._restore_before(icount - STEP_SPAN)
            restored = True
        else:
            restored = self.can_reverse and self._restore_ahead(icount - STEP_SPAN)
        if icount < self.start:
            return self._stop("begin")
        try:
            stop = self._land(icount, STEP_SPAN) if restored else self._replay_to(icount)[0]
        except (Divergence, GuestError) as e:
            return self._fault(e)
        if stop.reason == "limit":
            return self._stop("step")
        return self._ended(stop)

    def _land(self, icount: int, span: int) -> MachineStop:
        """Replay from a restored snapshot to `icount`, recording the last `span` instructions
        before it for reverse steps (debugger.checkpoints), and taking periodic snapshots only
        in the last snapshot interval before it."""
        assert self.snapshots is not None
        with self.snapshots.held(icount - (self.snapshots.interval or 0)):
            if icount - span > self.icount:
                stop, _ = self._replay_to(icount - span)
                if stop.reason != "limit":
                    return stop
            self._step_span = span
            stop = self.steps.build(icount, self._run_to)
            return stop if stop is not None else MachineStop("limit", self.icount)

    def _run_to(self, icount: int) -> MachineStop:
        return self._replay_to(icount)[0]

    def reverse_stepi(self) -> Stop:
        """Back one instruction; back over a whole interrupt handler whose iretq returned here,
        to the instruction before the interrupt (unless step_into_interrupts)."""
        self._require_reverse()
        stop = self._back_one()
        while stop.reason == "step" and not self.step_into_interrupts:
            delivered = self.interrupt_steps.delivery_returning_here()
            if delivered is None:
                break
            self.seek(delivered)
            stop = self._back_one()
        return stop

    def _back_one(self) -> Stop:
        here = self.icount
        if here <= self.start:
            return self._stop("begin")
        if self.steps.begin == here:  # stepping back past the stretch kept: keep a longer one
            span = min(2 * self._step_span, STEP_SPAN_MAX)
            self._restore_before(here - span)
            self._land(here, span)
        stop = self.seek(here - 1)
        if stop.reason == "step" and self.icount >= here:  # `here` ends a halt: back to the HLT
            previous = self.search.scan_back(lambda uc: True, here)
            if previous is None:
                self.seek(self.start)
                return self._stop("begin")
            stop = self.seek(previous)
        return stop

    def reverse_cont(self) -> Stop:
        """Run backwards to the last breakpoint/watchpoint hit before the current position."""
        self._require_reverse()
        self._interrupt.clear()
        self.points.drop_idle_code_hooks()
        hit = self.search.last_hit(self.start, self.icount, lambda h: True, self.icount_breaks,
                                   self._watched_pages(), self._portable_breaks())
        if hit is None:
            self.seek(self.start)
            return self._stop("begin")
        return self._go_to_hit(hit)

    def _portable_breaks(self) -> Optional[dict[int, Optional[Condition]]]:
        """The breakpoints with their conditions as other processes can evaluate them (GDB's
        bytecode), when every place a reverse search may stop is one: else None (a watchpoint,
        or a condition that is Python code: the search stays in this process)."""
        if self.watchpoints:
            return None
        breaks: dict[int, Optional[Condition]] = {}
        for addr in self.breakpoints:
            condition = self.break_conditions.get(addr)
            if condition is not None and not isinstance(condition, BoundCondition):
                return None
            breaks[addr] = condition.condition if condition is not None else None
        return breaks

    def _go_to_hit(self, hit: Hit) -> Stop:
        stop = self.seek(hit.icount) if hit.record is None else self.writes.seek_to_logged(hit.icount, hit.record, False)
        if stop.reason != "step":
            return stop
        return self._stop(hit.reason, watch_addr=hit.addr if hit.kind else None, watch_kind=hit.kind,
                          message=self.writes.logged_text(hit))

    def last_write(self, addr: int, length: int = 1) -> Optional[tuple[int, Optional[int], bytes, bytes]]:
        """The last write to [addr, addr+length) before the current position: (icount, rip, old, new),
        or None if there was none since the start. `rip` is None for a write the debugger made
        while recording (made again by the replay at `icount`, before the instruction there).

        Undo's `last` / TTD's memory query: a reverse search with a write watch that leaves the
        position where it was (debugger.writes)."""
        self._require_reverse()
        return self.writes.last(addr, length)

    def reverse_next(self) -> Stop:
        """Back one instruction; when that is the `ret` of a call made by the instruction before
        here, back over the whole call to the call instruction (or to the last breakpoint or
        watchpoint hit inside it)."""
        self._interrupt.clear()
        here, rsp0 = self.icount, self._rsp()
        stop = self.reverse_stepi()
        insn = self._insn()
        if stop.reason != "step" or self._rsp() >= rsp0 or insn is None or insn.mnemonic != "ret":
            return stop
        call = self.search.scan_back(lambda uc: uc.reg_read(_RSP) >= rsp0, self.icount)
        if call is None:
            self.seek(self.start)
            return self._stop("begin")
        hit = self.search.last_hit(call + 1, here, lambda h: True, self.icount_breaks)
        return self._go_to_hit(hit) if hit is not None else self.seek(call)

    def snapshots_text(self) -> str:
        if self.snapshots is None:
            return "no snapshot catalog\n"
        infos, _ = self.snapshots.by_icount()
        lines = [f"{len(infos)} snapshots; position icount {self.icount}"]
        for i in infos:
            lines.append(f"  {i.name:<24} icount {i.icount:>14}  {i.vtime_ns / 1e9:10.6f} s  {i.kind}")
        return "\n".join(lines) + "\n"
