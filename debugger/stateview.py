"""The machine's state at a Timeline's position, as a debugger reads and writes it: registers
by GDB's names, memory, the instruction at the PC; and what a write by the debugger does to a
replay (it leaves the recording until going back: off_recording, divergence).

Apart from debugger.timeline, which moves the position and inherits this view of it, because
GDB's packets and the console's commands read state far more often than they move."""
from __future__ import annotations

from typing import Optional

import capstone
from unicorn.x86_const import UC_X86_REG_RSP as _RSP

from cpu import cpustate
from cpu.machine import Machine
from replay.player import Divergence

_DISASM = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)

# GDB register name -> name in cpu.cpustate's capture.
_GDB_TO_STATE = {"eflags": "rflags", "fctrl": "fpcw", "fstat": "fpsw", "ftag": "fptag",
                 "fiseg": "fcs", "fioff": "fip", "foseg": "fds", "fooff": "fdp", "fop": "fop"}


class StateView:
    """Registers and memory of `machine` by a debugger's names; see the module doc."""

    def __init__(self, machine: Machine, replaying: bool) -> None:
        self.machine = machine
        self.replaying = replaying
        self._frame_regs = cpustate.RegisterBatch(machine.uc, ("rbp", "rsp", "rip"))

    def pc(self) -> int:
        return self.machine.rip()

    def _rsp(self) -> int:
        return self.machine.uc.reg_read(_RSP)

    def frame_registers(self) -> list[int]:
        """RBP, RSP, RIP: what a debugger unwinding the stack needs first."""
        return self._frame_regs.read()

    def _insn(self) -> Optional[capstone.CsInsn]:
        """The instruction at the PC (None if it does not decode)."""
        pc = self.pc()
        return next(_DISASM.disasm(self.read_memory(pc, 16), pc, 1), None)

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

    def read_register(self, name: str) -> int:
        """One register (up to 64 bits) by its GDB name: what a breakpoint condition reads at each
        hit, where reading them all would cost ~50 times more."""
        name = _GDB_TO_STATE.get(name, name)
        if name in cpustate.MSRS:
            return self.machine.uc.msr_read(cpustate.MSRS[name])
        return self.machine.uc.reg_read(cpustate.reg_id(name))

    def write_register(self, name: str, value: int) -> None:
        """An input (see write_memory); ValueError for a register or value it cannot take."""
        self.machine.write_register(_GDB_TO_STATE.get(name, name), value)
        self._state_changed()

    def read_memory(self, addr: int, length: int) -> bytes:
        return self.machine.ram.read(addr, length)

    def write_memory(self, addr: int, data: bytes) -> None:
        """An input: logged in a recording (its replay makes it too); in a replay it takes the
        timeline off the recording (see off_recording)."""
        self.machine.write_memory(addr, data)
        self._state_changed()

    @property
    def off_recording(self) -> bool:
        """A replay the debugger changed: until going back (a snapshot restored) its state is not
        the recording's, so no snapshot of it is stored and leaving it so is a divergence."""
        return self.replaying and self.machine.seam.debugger.changed_at is not None

    def divergence(self) -> Divergence:
        """What leaving the replay here says, while off_recording."""
        writes = self.machine.seam.debugger
        return Divergence(writes.changed_at or 0, writes.divergence_text())

    def _state_changed(self) -> None:
        """The debugger wrote to the machine's state (Timeline drops what it kept of the state
        before)."""
