"""What stops a run of the machine: breakpoints (with conditions), watchpoints, replay breakpoints
and the exits of a range step, with their Unicorn hooks.

A hit either stops the run (the machine's stop_before / stop_after, and `pending` says what hit)
or, while `collect` is a list (seeks and reverse searches replaying a stretch), is only added to
it. The timeline (debugger.timeline) owns one StopPoints and decides which of the two applies."""
from __future__ import annotations

from typing import Callable, Optional

from unicorn import UC_HOOK_CODE, UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE, UC_MEM_WRITE, Uc

from cpu.machine import Machine
from debugger.rangestep import RangeExits, indirect_target
from debugger.search import Hit

# Unicorn matches a memory hook's range against an access's first byte only, so a watch hook
# starts this many bytes early (the widest single access, an SSE store) and checks the overlap.
WIDEST_ACCESS = 16


def _check_span(addr: int, length: int) -> None:
    """ValueError for bytes a hook cannot cover: past the 64-bit address space (Unicorn refuses)."""
    if addr < 0 or length < 0 or addr + max(length, 1) >= 1 << 64:
        raise ValueError(f"{addr:#x}+{length} is outside the address space")


class StopPoints:
    """The stop points of one machine; see the module doc."""

    def __init__(self, machine: Machine, read_register: Callable[[str], int],
                 read_memory: Callable[[int, int], bytes]) -> None:
        """`read_register(gdb_name)` and `read_memory(addr, n)` are what conditions and range
        exits read."""
        self.machine = machine
        self.read_register = read_register
        self.read_memory = read_memory
        self.breakpoints: dict[int, int] = {}  # address -> hook handle
        self.break_conditions: dict[int, Optional[Callable[[], bool]]] = {}
        self._code_hooks: dict[int, int] = {}  # address -> its code hook, see code_hook
        self.range: Optional[RangeExits] = None  # while a range step runs
        self.watchpoints: dict[tuple[int, int, str], list[int]] = {}
        self.changes_only: set[tuple[int, int, str]] = set()  # watchpoints blind to same-value writes
        self.icount_breaks: set[int] = set()
        self.collect: Optional[list[Hit]] = None  # seeks and reverse searches collect instead of stopping
        self.ignore_break_at: Optional[int] = None  # a run ignores a breakpoint where it starts
        self.pending: Optional[Hit] = None  # what stopped the run
        machine.debugger_write_hooks.append(self._on_debugger_write)

    def add_breakpoint(self, addr: int, condition: Optional[Callable[[], bool]] = None) -> None:
        """Stop at `addr` (when `condition` is given: only where it returns true, checked at the
        hit, so a false one costs neither a stop nor, in a reverse search, a hit)."""
        _check_span(addr, 1)
        self.break_conditions[addr] = condition
        self.breakpoints[addr] = self.code_hook(addr)

    def remove_breakpoint(self, addr: int) -> None:
        self.breakpoints.pop(addr, None)
        self.break_conditions.pop(addr, None)

    def code_hook(self, addr: int) -> int:
        """The code hook at `addr`, shared by breakpoints and range-step exits and kept, idle,
        when neither uses it, until the next cont/reverse_cont: GDB removes and reinserts every
        breakpoint around each stop, and deleting a code hook makes Unicorn 2.1.4 drop every
        translation, where adding one needs only its own dropped."""
        if addr not in self._code_hooks:
            self._code_hooks[addr] = self.machine.uc.hook_add(UC_HOOK_CODE, self._on_code, None, addr, addr)
            self.machine.uc.ctl_remove_cache(addr, addr + 1)  # 2.1.4 only hooks code translated afterwards
        return self._code_hooks[addr]

    def drop_idle_code_hooks(self) -> None:
        """Delete the idle code hooks before a run long enough for them to cost (a Python call
        each time their address runs)."""
        for addr in [a for a in self._code_hooks if a not in self.breakpoints]:
            self.machine.uc.hook_del(self._code_hooks.pop(addr))

    def add_watchpoint(self, addr: int, length: int, kind: str, changes_only: bool = False) -> None:
        """Stop on accesses overlapping [addr, addr+length): kind "w" writes, "r" reads, "a" both.

        `changes_only` (for "w"): only writes that change a watched byte, as GDB's `watch` shows
        them; a write of the value already there is then no hit, in either direction."""
        _check_span(addr, length)
        key = (addr, length, kind)
        if changes_only and kind == "w":
            self.changes_only.add(key)
        else:
            self.changes_only.discard(key)
        if key in self.watchpoints:
            return
        types = {"w": [UC_HOOK_MEM_WRITE], "r": [UC_HOOK_MEM_READ],
                 "a": [UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE]}[kind]
        first, last = max(0, addr - WIDEST_ACCESS + 1), addr + max(length, 1) - 1
        # Memory hooks take effect at once and leave translations alone, added or deleted.
        self.watchpoints[key] = [self.machine.uc.hook_add(t, self._on_access, key, first, last) for t in types]

    def remove_watchpoint(self, addr: int, length: int, kind: str) -> None:
        self.changes_only.discard((addr, length, kind))
        for handle in self.watchpoints.pop((addr, length, kind), []):
            self.machine.uc.hook_del(handle)

    def _on_code(self, uc: Uc, address: int, size: int, _ud: object) -> None:
        if address in self.breakpoints and self._on_break(uc, address):
            return
        if self.range is not None:
            self._on_range_exit(uc, address)

    def _on_break(self, uc: Uc, address: int) -> bool:
        """A breakpoint's address is about to run: whether that stopped the run."""
        now = self.machine.now()
        if self.ignore_break_at == now and self.collect is None:
            return False
        if not self.break_holds(address):
            return False
        if self.collect is not None:
            self.collect.append(Hit(now, "breakpoint", address))
            return False
        self.pending = Hit(now, "breakpoint", address)
        self.machine.stop_before = "breakpoint"
        uc.emu_stop()
        return True

    def break_holds(self, address: int) -> bool:
        """Whether a breakpoint is set at `address` with no condition, or one true here."""
        if address not in self.breakpoints:
            return False
        condition = self.break_conditions.get(address)
        return condition is None or condition()

    def _on_range_exit(self, uc: Uc, address: int) -> None:
        """step_range: stop before an entry outside the range, or right after a range instruction
        whose target (known now, before it runs) lies outside."""
        assert self.range is not None
        if address in self.range.entries:
            self.machine.stop_before = "range-exit"
            uc.emu_stop()
        elif address in self.range.indirect:
            target = indirect_target(self.range.indirect[address], self.read_register, self.read_memory)
            if not self.range.contains(target):
                self.machine.stop_after = "range-exit"
                self.machine._end_slice_now()

    def _on_access(self, uc: Uc, access: int, address: int, size: int, value: int,
                   key: tuple[int, int, str]) -> None:
        addr, length, kind = key
        if address + size <= addr or address >= addr + max(length, 1):
            return  # an access just before the watched bytes (see WIDEST_ACCESS)
        if key in self.changes_only and not self._changes(address, size, value, addr, length):
            return
        hit = Hit(self.machine.now(), "watchpoint", address, kind, size, access == UC_MEM_WRITE)
        if self.collect is not None:
            self.collect.append(hit)
            return
        self.pending = hit
        self.machine.stop_after = "watchpoint"
        self.machine._end_slice_now()

    def _on_debugger_write(self, address: int, data: bytes) -> None:
        """A write the recording's debugger made, made again by the replay (between
        instructions): a hit of the write and access watchpoints on its bytes, as the guest's
        own writes are; a stop is right after it."""
        for key in self.watchpoints:
            addr, length, kind = key
            first, end = max(address, addr), min(address + len(data), addr + max(length, 1))
            if kind == "r" or first >= end:
                continue
            if key in self.changes_only and data[first - address:end - address] == self.machine.ram.read(first, end - first):
                continue
            hit = Hit(self.machine.icount, "watchpoint", first, kind, end - first, True,
                      record=self.machine.seam.core.player.pos)
            if self.collect is not None:
                self.collect.append(hit)
            elif self.pending is None:
                self.pending = hit
                self.machine.stop_after = "watchpoint"

    def _changes(self, address: int, size: int, value: int, addr: int, length: int) -> bool:
        """Whether a write (its hook runs before it lands) changes a byte of [addr, addr+length).
        Unicorn passes at most 8 bytes of value (signed): a wider store counts as a change."""
        if size > 8:
            return True
        first, end = max(address, addr), min(address + size, addr + max(length, 1))
        new = (value & ((1 << 64) - 1)).to_bytes(8, "little")[first - address:end - address]
        return new != self.machine.ram.read(first, end - first)

