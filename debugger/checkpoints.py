"""Fast reverse steps: light checkpoints and an undo record over one stretch of a replay.

A reverse step that restores a snapshot and replays its interval costs milliseconds, and GDB
builds reverse-step, reverse-next and reverse-finish out of one `bs` per instruction. So the first
step back into a stretch replays it once while keeping
- a light checkpoint every CHECKPOINT_EVERY instructions: the CPU (Unicorn's context, a 5.6 KiB
  copy), the devices, the timers, the log cursor and the disk overlay, but no RAM;
- the old bytes of every RAM write: UC_HOOK_MEM_WRITE fires before the store, and the machine's
  interrupt and debugger-write hooks before an interrupt frame is pushed or a write the
  recording's debugger made is made again (the only RAM the executor writes).
Going back to t then undoes the writes made since the checkpoint at or before t, newest first,
restores that checkpoint and replays forward to t: a few hundred instructions, tens of
microseconds, instead of a snapshot interval.

A write is keyed by the position it leads away from: an instruction's writes by its own icount,
an interrupt frame delivered at icount N by N - 1 (position N shows the handler's first
instruction, frame pushed), and so a logged debugger write made at N. The record depends only
on the recording, so it serves whenever the machine is at a position inside it in the replay's
own state, however it got there; a change made by the user (registers, memory) must `clear` it.
"""
from __future__ import annotations

import bisect
from array import array
from dataclasses import dataclass
from typing import Any, Callable, Optional

from unicorn import UC_HOOK_MEM_WRITE, Uc
from unicorn.x86_const import UC_X86_REG_RSP as _RSP

from cpu.machine import Machine, Stop
from replay import log as L

CHECKPOINT_EVERY = 512  # instructions between light checkpoints: a step back replays half that
PAGE = 4096


@dataclass
class _Checkpoint:
    icount: int
    cpu: Any  # unicorn UcContext
    board: dict
    timers: dict[str, Optional[int]]
    halted: bool
    exit_status: Optional[int]
    log_pos: Optional[L.Position]
    disk: Optional[dict[int, bytes]]
    writes: int  # writes logged before this position


class StepCache:
    """Checkpoints and undo record of one stretch [begin, end] of the replay; see the module doc."""

    def __init__(self, machine: Machine, own_timers: set[str], rearm: Callable[[], None]) -> None:
        """`own_timers` are left alone by a restore and re-armed by `rearm` (the snapshot
        manager's)."""
        self.machine = machine
        self.own_timers = own_timers
        self.rearm = rearm
        self.checkpoints: list[_Checkpoint] = []
        self.keys: list[int] = []  # the checkpoints' icounts
        self.write_at = array("q")  # each write's key (see the module doc), in execution order
        self.write_addr = array("Q")
        self.write_old: list[bytes] = []
        self.begin = self.end = -1
        self._recording = False
        machine.interrupt_hooks.append(self._on_interrupt)
        machine.debugger_write_hooks.append(self._on_debugger_write)

    def clear(self) -> None:
        self.checkpoints, self.keys = [], []
        self.write_at, self.write_addr, self.write_old = array("q"), array("Q"), []
        self.begin = self.end = -1

    def covers(self, target: int) -> bool:
        """Whether going back from the current position to `target` can be served here."""
        return bool(self.checkpoints) and self.begin <= target <= self.machine.icount <= self.end

    # -- recording a stretch --------------------------------------------------------------------

    def build(self, end: int, run_to: Callable[[int], Stop]) -> Optional[Stop]:
        """Replace the record with one from the current position (which must be the replay's
        own state) to `end`, running there with `run_to(icount)`; stops early where the run
        cannot go on (the end of the recording, a fault). Returns the last run's stop (None if
        the position was at `end` already)."""
        self.clear()
        m = self.machine
        self.begin = m.icount
        handle = m.uc.hook_add(UC_HOOK_MEM_WRITE, self._on_write)  # at once, no flush needed
        self._recording = True
        stop = None
        try:
            while True:
                self._checkpoint()
                if m.icount >= end:
                    break
                before = m.icount
                stop = run_to(min(end, m.icount + CHECKPOINT_EVERY))
                if m.icount <= before or m.exit_status is not None:
                    break
        finally:
            self._recording = False
            m.uc.hook_del(handle)
            self.end = m.icount
        return stop

    def _checkpoint(self) -> None:
        m = self.machine
        player = m.seam.core.player
        self.keys.append(m.icount)
        self.checkpoints.append(_Checkpoint(
            icount=m.icount, cpu=m.uc.context_save(), board=m.board.get_state(),
            timers={t.name: t.deadline for t in m.timers.timers if t.name not in self.own_timers},
            halted=m.halted, exit_status=m.exit_status,
            log_pos=player.position() if player is not None else None,
            disk=dict(m.disk.get_overlay()) if m.disk is not None else None,
            writes=len(self.write_at)))

    def _keep(self, key: int, address: int, size: int) -> None:
        """The old bytes of a write about to be made, keyed as the module doc says."""
        self.write_at.append(key)
        self.write_addr.append(address)
        self.write_old.append(self.machine.ram.mm[address:address + size])

    def _on_write(self, uc: Uc, access: int, address: int, size: int, value: int, _ud: object) -> None:
        self._keep(self.machine.now(), address, size)

    def _on_interrupt(self, vector: int) -> None:
        if self._recording:
            m = self.machine
            self._keep(m.icount - 1, *m.interrupts.frame_span(m.uc.reg_read(_RSP), vector=vector))

    def _on_debugger_write(self, address: int, data: bytes) -> None:
        """The recording's debugger write, made again at position N: like a frame, keyed N - 1."""
        if self._recording:
            self._keep(self.machine.icount - 1, address, len(data))

    # -- going back -----------------------------------------------------------------------------

    def rewind(self, target: int, run_to: Callable[[int], object]) -> None:
        """Go back to `target` (`covers(target)` must hold): undo the writes since the
        checkpoint at or before it, restore that checkpoint, replay forward with `run_to`."""
        m = self.machine
        cp = self.checkpoints[bisect.bisect_right(self.keys, target) - 1]
        mm, pages = m.ram.mm, set()
        for k in range(bisect.bisect_left(self.write_at, m.icount) - 1, cp.writes - 1, -1):
            address, old = self.write_addr[k], self.write_old[k]
            mm[address:address + len(old)] = old
            pages.add(address // PAGE)
        for page in pages:  # RAM changed under Unicorn: drop translations of code there, if any
            m.uc.ctl_remove_cache(page * PAGE, (page + 1) * PAGE)
        m.uc.context_restore(cp.cpu)
        m.board.set_state(cp.board)
        for timer in m.timers.timers:
            if timer.name not in self.own_timers:
                timer.deadline = cp.timers.get(timer.name)
        m.halted, m.exit_status, m.icount = cp.halted, cp.exit_status, cp.icount
        if cp.log_pos is not None:
            m.seam.core.player.seek(cp.log_pos)
        if cp.disk is not None:
            m.disk.set_overlay(dict(cp.disk))
        self.rearm()
        run_to(target)
