"""Navigation over a replay: one object owns the position, the snapshots and the breakpoints.

Modelled on rr's ReplayTimeline. Forward execution runs the machine with breakpoint and
watchpoint hooks that stop it. Going back is always "restore the nearest earlier snapshot, replay
forward": reverse-stepi replays to icount-1; reverse-continue replays the interval before the
current position with hooks that only *collect* hits (exact icounts come from the instruction
counter, see cpu.icount), and if there were hits, seeks to the last one; otherwise it tries the
interval before that, and so on back to the start of the recording.

Usable from scripts:

    tl = Timeline.for_replay("run.rr", "guest.elf")
    tl.add_breakpoint(0x100123)
    stop = tl.cont(); stop = tl.reverse_stepi(); tl.seek(1_000_000)
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Optional

import capstone
from unicorn import UC_HOOK_CODE, UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE, Uc
from unicorn.x86_const import UC_X86_REG_RSP as _RSP

from cpu import cpustate
from cpu.machine import Machine, Stop as MachineStop
from snapshots.manager import SnapshotManager

_DISASM = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
RUN_CHUNK = 1 << 21  # forward runs check for Ctrl-C this often (in icounts)

# GDB register name -> name in cpu.cpustate's capture.
_GDB_TO_STATE = {"eflags": "rflags", "fctrl": "fpcw", "fstat": "fpsw", "ftag": "fptag",
                 "fiseg": "fcs", "fioff": "fip", "foseg": "fds", "fooff": "fdp", "fop": "fop"}


@dataclass
class Stop:
    reason: str  # "step" | "breakpoint" | "watchpoint" | "begin" | "end" | "exited" | "interrupt" | "icount-break" | "fault"
    icount: int
    pc: int
    watch_addr: Optional[int] = None
    watch_kind: Optional[str] = None
    exit_status: Optional[int] = None
    message: str = ""


@dataclass(frozen=True)
class Hit:
    icount: int
    reason: str
    addr: Optional[int] = None
    kind: Optional[str] = None


class Timeline:
    def __init__(self, machine: Machine, snapshots: Optional[SnapshotManager], replaying: bool) -> None:
        self.machine = machine
        self.snapshots = snapshots
        self.can_reverse = replaying and snapshots is not None
        self.start = machine.icount
        self.breakpoints: dict[int, int] = {}  # address -> hook handle
        self.watchpoints: dict[tuple[int, int, str], list[int]] = {}
        self.icount_breaks: set[int] = set()
        self._interrupt = threading.Event()
        self._collect: Optional[list[Hit]] = None  # reverse scans collect instead of stopping
        self._ignore_break_at: Optional[int] = None
        self._pending: Optional[Hit] = None
        self._exited: Optional[MachineStop] = None
        if snapshots is not None and snapshots.nearest(self.start) is None:
            snapshots.take("start", "initial")

    # -- state --------------------------------------------------------------------------------

    @property
    def icount(self) -> int:
        return self.machine.icount

    def pc(self) -> int:
        return self.machine.rip()

    def read_registers(self) -> dict[str, int]:
        regs = self.machine.registers.read()
        out = {k: v for k, v in regs.items() if not isinstance(v, list)}
        out["eflags"] = regs["rflags"]
        for gdb, ours in _GDB_TO_STATE.items():
            out[gdb] = regs[ours]
        for i in range(8):
            mantissa, exponent = regs[f"st{i}"]
            out[f"st{i}"] = mantissa | (exponent << 64)
        return out

    def write_register(self, name: str, value: int) -> None:
        name = _GDB_TO_STATE.get(name, name)
        if name.startswith("st") and name[2:].isdigit():
            self.machine.uc.reg_write(cpustate.reg_id(name), (value & ((1 << 64) - 1), value >> 64))
            return
        if name in cpustate.MSRS:
            self.machine.uc.msr_write(cpustate.MSRS[name], value)
            return
        try:
            self.machine.uc.reg_write(cpustate.reg_id(name), value)
        except AttributeError:
            raise ValueError(f"unknown register {name}") from None

    def read_memory(self, addr: int, length: int) -> bytes:
        return self.machine.ram.read(addr, length)

    def write_memory(self, addr: int, data: bytes) -> None:
        self.machine.ram.write(addr, data)
        self.machine.uc.ctl_flush_tb()

    # -- breakpoints and watchpoints ----------------------------------------------------------

    def add_breakpoint(self, addr: int) -> None:
        if addr in self.breakpoints:
            return
        self.breakpoints[addr] = self.machine.uc.hook_add(UC_HOOK_CODE, self._on_break, None, addr, addr)
        self.machine.uc.ctl_flush_tb()  # Unicorn 2.1.4 only hooks code translated afterwards

    def remove_breakpoint(self, addr: int) -> None:
        handle = self.breakpoints.pop(addr, None)
        if handle is not None:
            self.machine.uc.hook_del(handle)
            self.machine.uc.ctl_flush_tb()

    def add_watchpoint(self, addr: int, length: int, kind: str) -> None:
        key = (addr, length, kind)
        if key in self.watchpoints:
            return
        types = {"w": [UC_HOOK_MEM_WRITE], "r": [UC_HOOK_MEM_READ],
                 "a": [UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE]}[kind]
        last = addr + max(length, 1) - 1
        self.watchpoints[key] = [self.machine.uc.hook_add(t, self._on_access, kind, addr, last) for t in types]
        self.machine.uc.ctl_flush_tb()

    def remove_watchpoint(self, addr: int, length: int, kind: str) -> None:
        for handle in self.watchpoints.pop((addr, length, kind), []):
            self.machine.uc.hook_del(handle)
        self.machine.uc.ctl_flush_tb()

    def set_icount_break(self, icount: int) -> None:
        self.icount_breaks.add(icount)

    def clear_icount_breaks(self) -> None:
        self.icount_breaks.clear()

    def _on_break(self, uc: Uc, address: int, size: int, _ud: object) -> None:
        now = self.machine.now()
        if self._collect is not None:
            self._collect.append(Hit(now, "breakpoint", address))
            return
        if self._ignore_break_at == now:
            return
        self._pending = Hit(now, "breakpoint", address)
        self.machine.stop_before = "breakpoint"
        uc.emu_stop()

    def _on_access(self, uc: Uc, access: int, address: int, size: int, value: int, kind: str) -> None:
        now = self.machine.now()
        if self._collect is not None:
            self._collect.append(Hit(now, "watchpoint", address, kind))
            return
        self._pending = Hit(now + 1, "watchpoint", address, kind)
        self.machine.stop_after = "watchpoint"
        self.machine._end_slice_now()

    # -- forward ------------------------------------------------------------------------------

    def interrupt(self) -> None:
        """Thread-safe: ask a running cont/reverse_cont to stop soon."""
        self._interrupt.set()

    def _stop(self, reason: str, **kw) -> Stop:
        return Stop(reason, self.icount, self.pc(), **kw)

    def _run(self, until: Optional[int], ignore_here: bool) -> Stop:
        """Run forward to `until` (or the end), stopping at breakpoints, watchpoints, exit."""
        if self._exited is not None:
            return self._stop("exited", exit_status=self._exited.status, message=self._exited.message)
        self._ignore_break_at = self.icount if ignore_here else None
        self._pending = None
        try:
            while True:
                chunk_end = self.icount + RUN_CHUNK
                limit = chunk_end if until is None else min(until, chunk_end)
                later = [b for b in self.icount_breaks if b > self.icount]
                if later and min(later) <= limit:
                    limit = min(later)
                try:
                    stop = self.machine.run(limit)
                except Exception as e:  # a guest fault or divergence ends the run here
                    return self._stop("fault", message=str(e))
                if stop.reason == "limit":
                    if until is not None and self.icount >= until:
                        return self._stop("step")
                    if self.icount in self.icount_breaks:
                        return self._stop("icount-break")
                    if self._interrupt.is_set():
                        self._interrupt.clear()
                        return self._stop("interrupt")
                    continue
                if stop.reason == "breakpoint":
                    return self._stop("breakpoint")
                if stop.reason == "watchpoint":
                    hit = self._pending
                    return self._stop("watchpoint", watch_addr=hit.addr if hit else None,
                                      watch_kind=hit.kind if hit else None)
                if stop.reason == "end":
                    return self._stop("end", message=stop.message)
                self._exited = stop
                return self._stop("exited", exit_status=stop.status, message=stop.message)
        finally:
            self._ignore_break_at = None

    def stepi(self) -> Stop:
        return self._run(self.icount + 1, ignore_here=True)

    def cont(self) -> Stop:
        self._interrupt.clear()
        return self._run(None, ignore_here=True)

    # -- backward -----------------------------------------------------------------------------

    def _require_reverse(self) -> None:
        if not self.can_reverse:
            raise ValueError("reverse execution needs a replay (rr=replay) with a snapshot catalog")

    def _restore_before(self, icount: int) -> int:
        """Restore the latest snapshot at or before `icount` (never before the start)."""
        assert self.snapshots is not None
        info = self.snapshots.nearest(max(icount, self.start))
        if info is None:
            raise ValueError(f"no snapshot at or before icount {icount}")
        self.snapshots.restore(info.name)
        self._exited = None
        return info.icount

    def seek(self, icount: int) -> Stop:
        """Go to exactly `icount`: restore the nearest snapshot at or before it, replay forward."""
        if icount < self.icount or self._exited is not None:
            self._require_reverse()
            self._restore_before(icount)
        if icount < self.start:
            return self._stop("begin")
        saved = self._collect
        self._collect = []  # collect, i.e. do not stop, while seeking
        try:
            stop = self.machine.run(icount)
        finally:
            self._collect = saved
        if stop.reason == "limit":
            return self._stop("step")
        if stop.reason == "end":
            return self._stop("end", message=stop.message)
        self._exited = stop
        return self._stop("exited", exit_status=stop.status, message=stop.message)

    def reverse_stepi(self) -> Stop:
        self._require_reverse()
        if self.icount <= self.start:
            return self._stop("begin")
        return self.seek(self.icount - 1)

    def _hits_between(self, begin_snapshot: int, end: int) -> list[Hit]:
        """Replay [snapshot, end) collecting every breakpoint/watchpoint hit (already restored)."""
        self._collect = []
        try:
            self.machine.run(end)
        finally:
            hits, self._collect = self._collect, None
        hits = [h for h in hits if h.icount < end]
        hits += [Hit(b, "icount-break") for b in self.icount_breaks if begin_snapshot <= b < end]
        return sorted(hits, key=lambda h: h.icount)

    def reverse_cont(self) -> Stop:
        """Run backwards to the last breakpoint/watchpoint hit before the current position."""
        self._require_reverse()
        self._interrupt.clear()
        end = self.icount
        while end > self.start:
            if self._interrupt.is_set():
                self._interrupt.clear()
                return self.seek(end)
            begin = self._restore_before(end - 1)
            hits = self._hits_between(begin, end)
            if hits:
                last = hits[-1]
                stop = self.seek(last.icount)
                if stop.reason != "step":
                    return stop
                return self._stop(last.reason, watch_addr=last.addr if last.kind else None,
                                  watch_kind=last.kind)
            end = begin
        self.seek(self.start)
        return self._stop("begin")

    def next(self) -> Stop:
        """One instruction, stepping over a call (to its return with the stack back where it was)."""
        pc = self.pc()
        insn = next(_DISASM.disasm(self.read_memory(pc, 16), pc, 1), None)
        if insn is None or insn.mnemonic != "call":
            return self.stepi()
        rsp0, ret = self.read_registers()["rsp"], pc + insn.size
        temporary = ret not in self.breakpoints
        self.add_breakpoint(ret)
        try:
            stop = self.stepi()
            while stop.reason in ("step", "breakpoint") and not (stop.pc == ret and self.read_registers()["rsp"] >= rsp0):
                stop = self.cont()
            return stop if stop.reason != "breakpoint" or not temporary else self._stop("step")
        finally:
            if temporary:
                self.remove_breakpoint(ret)

    def reverse_next(self) -> Stop:
        """Back one instruction; if that lands inside a call made from here, back to the call."""
        rsp0 = self.read_registers()["rsp"]
        stop = self.reverse_stepi()
        if stop.reason != "step" or self.read_registers()["rsp"] >= rsp0:
            return stop
        found = self._scan_back(lambda uc: self.machine.uc.reg_read(_RSP) >= rsp0)
        return self.seek(found) if found is not None else self.seek(self.start)

    def _scan_back(self, predicate: Callable[[Uc], bool]) -> Optional[int]:
        """The last icount before here at which `predicate` held before an instruction ran.

        Runs every instruction through a Python hook: slow, but only over the intervals between
        the nearest snapshots, newest first."""
        end = self.icount
        while end > self.start:
            begin = self._restore_before(end - 1)
            seen: list[int] = []

            def hook(uc: Uc, address: int, size: int, _ud: object) -> None:
                if predicate(uc):
                    seen.append(self.machine.now())
            handle = self.machine.uc.hook_add(UC_HOOK_CODE, hook)
            self.machine.uc.ctl_flush_tb()
            try:
                self.machine.run(end)
            finally:
                self.machine.uc.hook_del(handle)
                self.machine.uc.ctl_flush_tb()
            seen = [i for i in seen if i < end]
            if seen:
                return seen[-1]
            end = begin
        return None

    def last_write(self, addr: int, length: int = 1) -> Optional[tuple[int, int, bytes, bytes]]:
        """The last write to [addr, addr+length) before the current position: (icount, rip, old, new).

        Undo's `last` / TTD's memory query: a reverse scan with a write watch that does not move
        the position."""
        self._require_reverse()
        here = self.icount
        key = (addr, length, "w")
        added = key not in self.watchpoints
        if added:
            self.add_watchpoint(addr, length, "w")
        try:
            end = here
            found: Optional[Hit] = None
            while end > self.start and found is None:
                begin = self._restore_before(end - 1)
                hits = [h for h in self._hits_between(begin, end) if h.reason == "watchpoint"]
                if hits:
                    found = hits[-1]
                end = begin
            if found is None:
                return None
            self.seek(found.icount)
            rip, old = self.pc(), self.read_memory(addr, length)
            self.seek(found.icount + 1)
            new = self.read_memory(addr, length)
            return found.icount, rip, old, new
        finally:
            if added:
                self.remove_watchpoint(addr, length, "w")
            self.seek(here)

    def snapshots_text(self) -> str:
        if self.snapshots is None:
            return "no snapshot catalog"
        infos = sorted(self.snapshots.infos.values(), key=lambda i: i.icount)
        lines = [f"{len(infos)} snapshots; position icount {self.icount}"]
        for i in infos:
            lines.append(f"  {i.name:<24} icount {i.icount:>14}  {i.vtime_ns / 1e9:10.6f} s  {i.kind}")
        return "\n".join(lines) + "\n"
