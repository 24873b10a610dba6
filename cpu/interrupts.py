"""Delivering an external interrupt through the guest's IDT, as the CPU would in long mode.

Unicorn has no interrupt controller and never vectors anything through the IDT, so the executor
does it between slices: push the 64-bit frame (SS, RSP, RFLAGS, CS, RIP) on a 16-byte aligned
stack, clear IF for an interrupt gate, and jump to the gate's handler."""
from __future__ import annotations

import struct

from unicorn import Uc
from unicorn.x86_const import UC_X86_REG_IDTR as _IDTR

from cpu.cpustate import RegisterBatch
from cpu.ram import Ram

_MSR_EFER, _EFER_LMA = 0xC0000080, 1 << 10
IF = 1 << 9
TF = 1 << 8
_GATE = struct.Struct("<HHBBHII")
_FRAME = struct.Struct("<5Q")


class InterruptError(RuntimeError):
    """The guest's IDT cannot take the interrupt (missing gate, bad stack): a guest fault."""


class InterruptDelivery:
    def __init__(self, uc: Uc, ram: Ram) -> None:
        self.uc = uc
        self.ram = ram
        self.regs = RegisterBatch(uc, ("rsp", "ss", "rflags", "cs", "rip"))

    @staticmethod
    def frame_span(rsp: int) -> tuple[int, int]:
        """(address, size) of the frame an interrupt taken with this RSP pushes."""
        return (rsp & ~0xF) - _FRAME.size, _FRAME.size

    def deliver(self, vector: int) -> int:
        """Enter the handler for `vector`; returns the handler address."""
        if not self.uc.msr_read(_MSR_EFER) & _EFER_LMA:
            raise InterruptError(f"interrupt vector {vector:#x} arrived outside long mode "
                                 "(32-bit interrupt delivery is not supported)")
        _sel, base, limit, _flags = self.uc.reg_read(_IDTR)
        if vector * 16 + 15 > limit:
            raise InterruptError(f"interrupt vector {vector:#x} is beyond the IDT limit {limit:#x}")
        try:
            gate = self.ram.read(base + vector * 16, 16)
        except ValueError:
            raise InterruptError(f"IDT at {base:#x} is outside RAM") from None
        off_lo, selector, ist, attrs, off_mid, off_hi, _ = _GATE.unpack(gate)
        if not attrs & 0x80 or (attrs & 0x0F) not in (0x0E, 0x0F):
            raise InterruptError(f"no present interrupt gate for vector {vector:#x}")
        if ist & 7:
            raise InterruptError(f"vector {vector:#x} uses an IST stack, which needs a TSS (unsupported)")
        handler = off_lo | (off_mid << 16) | (off_hi << 32)
        rsp, ss, rflags, cs, rip = self.regs.read()
        new_rsp, _ = self.frame_span(rsp)
        try:
            self.ram.write(new_rsp, _FRAME.pack(rip, cs, rflags, rsp, ss))
        except ValueError:
            raise InterruptError(f"interrupt stack at {new_rsp:#x} is outside RAM") from None
        if attrs & 0x0F == 0x0E:
            rflags &= ~IF
        rflags &= ~TF
        self.regs.write([new_rsp, ss, rflags, selector, handler])
        return handler
