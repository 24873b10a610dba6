"""Whole-history queries: every write to some memory, every execution of an address, the value
of a register or memory at regular icounts. Each replays its segments with hooks that collect
what they see, at exact icounts (Unicorn's private instruction counter, `Machine.now()`).

Positions are icounts as everywhere in urr: a write or hit "at icount N" is made by the
instruction that runs when N instructions have run (the position a debugger stops at before it).
Segments are half-open, [start, end): the instruction at a segment's end belongs to the next."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import capstone
from unicorn import UC_HOOK_CODE, UC_HOOK_MEM_WRITE, Uc
from unicorn.x86_const import UC_X86_REG_RSP

from cpu.machine import Machine, Stop
from debugger.agentexpr import Condition
from debugger.stateview import StateView
from history.segments import Interval, Replayer, Segment, overlapping, run_until, whole_history
from replay.digest import GPR_NAMES
from snapshots.catalog import SnapshotInfo

WIDEST_ACCESS = 16  # Unicorn matches a write hook's range by the access's first byte
_DISASM = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
_WROTE = "history-write"  # the stop a write hook asks for, right after the writing instruction
DEBUGGER_WRITE = "(written from the debugger while recording)"  # a Write's `instruction` for a logged debugger write


@dataclass(frozen=True)
class Write:
    """One instruction's write to the watched memory; old and new are the watched bytes."""
    icount: int
    rip: int
    instruction: str
    old: bytes
    new: bytes


@dataclass(frozen=True)
class Hit:
    """One execution of the address; registers (general, rip, rflags) when asked for."""
    icount: int
    registers: Optional[dict[str, int]] = None


@dataclass(frozen=True)
class Sample:
    icount: int
    value: int


def instruction_at(machine: Machine, rip: int) -> str:
    insn = next(_DISASM.disasm(machine.ram.read(rip, 16), rip, 1), None)
    return f"{insn.mnemonic} {insn.op_str}".strip() if insn else "(bad instruction)"


class HistoryQuery:
    """A query over the whole recording: each segment replayed once, straight through, with the
    query's hooks. Subclasses install hooks (`hooks`) and act on the stops they ask for."""
    label = "query"

    def intervals(self, infos: list[SnapshotInfo], end_icount: int, from_boot: bool) -> list[Interval]:
        return whole_history(infos, end_icount, from_boot)

    def snapshots_used(self, segment: Segment) -> tuple[list[str], list[str]]:
        return [run[0].start for run in segment.runs() if run[0].start is not None], []

    def hooks(self, machine: Machine, found: list) -> list[Callable[[], None]]:
        """Install the query's hooks on `machine`; what removes each."""
        return []

    def on_stop(self, machine: Machine, stop: Stop, found: list) -> None:
        """A stop a hook asked for (the run goes on after it)."""

    def drive(self, machine: Machine, begin: int, until: Optional[int], found: list) -> None:
        """Replay from `begin` (where the machine is) to `until` (None: the end)."""
        while True:
            stop = run_until(machine, until)
            if stop.reason in ("limit", "end", "exit"):
                return
            self.on_stop(machine, stop, found)

    def run(self, replayer: Replayer, segment: Segment) -> list:
        found: list = []
        for run in segment.runs():
            machine = replayer.at(run[0].start)
            removals = self.hooks(machine, found)
            machine.uc.ctl_flush_tb()  # Unicorn 2.1.4 only hooks code translated afterwards
            try:
                self.drive(machine, run[0].start_icount,
                           None if run[-1].end is None else run[-1].end_icount, found)
            finally:
                for remove in removals:
                    remove()
                machine.uc.ctl_flush_tb()
        return found


class Writes(HistoryQuery):
    """Every write to [addr, addr+length), same-value writes included: by an instruction, by
    the CPU pushing an interrupt's frame, or by a debugger while the recording was made (GDB's
    `set var`, logged and made again by the replay: DEBUGGER_WRITE, at its icount).

    The write hook notes the icount, RIP and the old bytes and ends the slice right after the
    instruction, where the new bytes are read. An interrupt frame overlapping the memory is
    reported at the icount the interrupt is taken, with the interrupted RIP. Given `ranges`
    (icount ranges outside which no write to the memory's pages can be: a write index), only
    the snapshot intervals that overlap them are replayed."""
    label = "writes"

    def __init__(self, addr: int, length: int, ranges: Optional[list[tuple[int, int]]] = None) -> None:
        self.addr, self.length = addr, max(1, length)
        self.ranges = ranges
        self._pending: Optional[tuple[int, int, bytes]] = None

    def intervals(self, infos: list[SnapshotInfo], end_icount: int, from_boot: bool) -> list[Interval]:
        everything = super().intervals(infos, end_icount, from_boot)
        return everything if self.ranges is None else overlapping(everything, self.ranges)

    def hooks(self, machine: Machine, found: list) -> list[Callable[[], None]]:
        self._pending = None
        first = max(0, self.addr - WIDEST_ACCESS + 1)
        handle = machine.uc.hook_add(UC_HOOK_MEM_WRITE, self._on_write, machine, first,
                                     self.addr + self.length - 1)
        frame: list[tuple[int, int, int, bytes]] = []  # an interrupt being delivered

        def before_delivery(vector: int) -> None:
            address, size = machine.interrupts.frame_span(machine.uc.reg_read(UC_X86_REG_RSP), vector=vector)
            if address < self.addr + self.length and self.addr < address + size:
                frame.append((machine.icount, machine.rip(), vector, machine.ram.read(self.addr, self.length)))

        def after_delivery() -> None:  # at the slice boundary that follows the delivery
            if frame:
                icount, rip, vector, old = frame.pop()
                found.append(Write(icount, rip, f"(interrupt {vector:#x}: the CPU pushes its frame)", old,
                                   machine.ram.read(self.addr, self.length)))
        def debugger_write(address: int, data: bytes) -> None:  # the recording's, made again
            first, end = max(address, self.addr), min(address + len(data), self.addr + self.length)
            if first < end:
                old = machine.ram.read(self.addr, self.length)
                new = bytearray(old)
                new[first - self.addr:end - self.addr] = data[first - address:end - address]
                found.append(Write(machine.icount, machine.rip(), DEBUGGER_WRITE, old, bytes(new)))
        machine.interrupt_hooks.append(before_delivery)
        machine.boundary_hooks.append(after_delivery)
        machine.debugger_write_hooks.append(debugger_write)
        return [lambda: machine.uc.hook_del(handle), lambda: machine.interrupt_hooks.remove(before_delivery),
                lambda: machine.boundary_hooks.remove(after_delivery),
                lambda: machine.debugger_write_hooks.remove(debugger_write)]

    def _on_write(self, uc: Uc, access: int, address: int, size: int, value: int, machine: Machine) -> None:
        if address + size <= self.addr or address >= self.addr + self.length:
            return  # just before the watched bytes (see WIDEST_ACCESS)
        now = machine.now()
        if self._pending is not None and self._pending[0] == now:
            return  # another part of the same instruction's write
        self._pending = (now, machine.rip(), machine.ram.read(self.addr, self.length))
        machine.stop_after = _WROTE
        machine._end_slice_now()

    def on_stop(self, machine: Machine, stop: Stop, found: list) -> None:
        if stop.reason != _WROTE or self._pending is None:
            return
        icount, rip, old = self._pending
        found.append(Write(icount, rip, instruction_at(machine, rip), old,
                           machine.ram.read(self.addr, self.length)))


class Hits(HistoryQuery):
    """Every execution of the instruction at `addr`."""
    label = "hits"

    def __init__(self, addr: int, registers: bool = False) -> None:
        self.addr, self.registers = addr, registers

    def hooks(self, machine: Machine, found: list) -> list[Callable[[], None]]:
        def on_code(uc: Uc, address: int, size: int, _ud: object) -> None:
            regs = None
            if self.registers:
                values = machine.registers.read()
                regs = {n: values[n] for n in GPR_NAMES}
            found.append(Hit(machine.now(), regs))
        handle = machine.uc.hook_add(UC_HOOK_CODE, on_code, None, self.addr, self.addr)
        return [lambda: machine.uc.hook_del(handle)]


class Executions(HistoryQuery):
    """Every execution of the instructions at the keys of `breaks` where the breakpoint's
    condition (GDB's bytecode, or None) holds, as (icount, address): what a debugger's reverse
    search to breakpoints fanned out over cores collects (debugger.fanout)."""
    label = "breakpoints"

    def __init__(self, breaks: dict[int, Optional[Condition]]) -> None:
        self.breaks = breaks

    def hooks(self, machine: Machine, found: list) -> list[Callable[[], None]]:
        view = StateView(machine, True)  # registers by GDB's names, as the conditions read them

        def on_code(uc: Uc, address: int, size: int, _ud: object) -> None:
            condition = self.breaks.get(address)
            if condition is None or condition.holds(view.read_register, view.read_memory):
                found.append((machine.now(), address))
        handles = [machine.uc.hook_add(UC_HOOK_CODE, on_code, None, a, a) for a in sorted(self.breaks)]
        return [lambda h=h: machine.uc.hook_del(h) for h in handles]


@dataclass(frozen=True)
class Expression:
    """What `sample` reads: a register by name, or `length` bytes at `addr` (little-endian)."""
    register: Optional[str] = None
    addr: int = 0
    length: int = 8

    def read(self, machine: Machine) -> int:
        if self.register is not None:
            return int(machine.registers.read()[self.register])
        return int.from_bytes(machine.ram.read(self.addr, self.length), "little")


class Samples(HistoryQuery):
    """The expression's value at icounts 0, every, 2*every, ... up to the end (a point inside a
    halt reads the state at the halt's end, where the replay next stops)."""
    label = "sample"

    def __init__(self, expression: Expression, every: int) -> None:
        self.expression, self.every = expression, every

    def drive(self, machine: Machine, begin: int, until: Optional[int], found: list) -> None:
        point = -(-begin // self.every) * self.every
        while until is None or point < until:
            if machine.icount < point:
                stop = run_until(machine, point)
                if stop.reason != "limit":
                    return  # the recording ended before this point
            found.append(Sample(point, self.expression.read(machine)))
            point += self.every
