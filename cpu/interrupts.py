"""Delivering an external interrupt through the guest's IDT, as the CPU would.

Unicorn has no interrupt controller and never vectors anything through the IDT, so the executor
does it between slices. In long mode: push the 64-bit frame (SS, RSP, RFLAGS, CS, RIP) on a
16-byte aligned stack through a 16-byte gate; a gate with an IST index (1-7) switches to that
stack, read from the 64-bit TSS the guest loaded into TR (so the interrupted stack, its red zone
included, is left alone). In 32-bit protected mode (a Multiboot or PVH kernel
before its switch, or one that stays there): push EFLAGS, CS, EIP through an 8-byte 32-bit gate,
at the same privilege (no stack switch). Either way an interrupt gate clears IF, and the CPU
jumps to the gate's handler. The gate's selector is written as Unicorn writes selectors (the
hidden descriptor stays that of the interrupted code: the handler's segment must be of the same
kind, as a flat kernel's is); the frame is written at the stack address as a physical one."""
from __future__ import annotations

import struct

from unicorn import Uc
from unicorn.x86_const import UC_X86_REG_IDTR as _IDTR, UC_X86_REG_TR as _TR

from cpu.cpustate import RegisterBatch
from cpu.ram import Ram

_MSR_EFER, _EFER_LMA = 0xC0000080, 1 << 10
IF = 1 << 9
TF = 1 << 8
_GATE = struct.Struct("<HHBBHII")
_FRAME = struct.Struct("<5Q")
_GATE32 = struct.Struct("<HHBBH")
_FRAME32 = struct.Struct("<3I")
_TSS_IST1 = 0x24  # IST1..IST7: 8 bytes each from here in the 64-bit TSS


class InterruptError(RuntimeError):
    """The guest's IDT cannot take the interrupt (missing gate, bad stack): a guest fault."""


class InterruptDelivery:
    def __init__(self, uc: Uc, ram: Ram) -> None:
        self.uc = uc
        self.ram = ram
        self.regs = RegisterBatch(uc, ("rsp", "ss", "rflags", "cs", "rip"))

    def long_mode(self) -> bool:
        return bool(self.uc.msr_read(_MSR_EFER) & _EFER_LMA)

    def frame_span(self, rsp: int, long_mode: bool | None = None, vector: int | None = None) -> tuple[int, int]:
        """(address, size) of the frame an interrupt taken with this RSP pushes (through
        `vector`'s gate: on its IST stack if it names one)."""
        if long_mode is None:
            long_mode = self.long_mode()
        if long_mode:
            if vector is not None:
                try:
                    rsp = self._stack(rsp, self._gate(vector, long_mode)[2])
                except InterruptError:
                    pass  # delivery fails and says why
            return (rsp & ~0xF) - _FRAME.size, _FRAME.size
        return (rsp - _FRAME32.size) & 0xFFFFFFFF, _FRAME32.size

    def _gate(self, vector: int, long_mode: bool) -> tuple[int, int, int, int]:
        """(handler, selector, IST index, type and attributes) of `vector`'s IDT gate."""
        size = 16 if long_mode else 8
        _sel, base, limit, _flags = self.uc.reg_read(_IDTR)
        if vector * size + size - 1 > limit:
            raise InterruptError(f"interrupt vector {vector:#x} is beyond the IDT limit {limit:#x}")
        try:
            gate = self.ram.read(base + vector * size, size)
        except ValueError:
            raise InterruptError(f"IDT at {base:#x} is outside RAM") from None
        if long_mode:
            off_lo, selector, ist, attrs, off_mid, off_hi, _ = _GATE.unpack(gate)
            handler = off_lo | (off_mid << 16) | (off_hi << 32)
        else:
            off_lo, selector, ist, attrs, off_hi = _GATE32.unpack(gate)
            handler, ist = off_lo | (off_hi << 16), 0
        if not attrs & 0x80 or (attrs & 0x0F) not in (0x0E, 0x0F):
            raise InterruptError(f"no present interrupt gate for vector {vector:#x}")
        return handler, selector, ist & 7, attrs

    def _stack(self, rsp: int, ist: int) -> int:
        """The RSP the frame goes below: the interrupted one, or the TSS's IST slot `ist`."""
        if not ist:
            return rsp
        _sel, base, limit, _flags = self.uc.reg_read(_TR)
        slot = _TSS_IST1 + 8 * (ist - 1)
        if limit < slot + 7:
            raise InterruptError(f"an interrupt gate uses IST{ist}, but the TSS in TR (limit {limit:#x}) has none")
        try:
            return int.from_bytes(self.ram.read(base + slot, 8), "little")
        except ValueError:
            raise InterruptError(f"the TSS at {base:#x} is outside RAM") from None

    def deliver(self, vector: int) -> int:
        """Enter the handler for `vector`; returns the handler address."""
        long_mode = self.long_mode()
        handler, selector, ist, attrs = self._gate(vector, long_mode)
        rsp, ss, rflags, cs, rip = self.regs.read()
        new_rsp, _ = self.frame_span(self._stack(rsp, ist), long_mode)
        frame = (_FRAME.pack(rip, cs, rflags, rsp, ss) if long_mode
                 else _FRAME32.pack(rip & 0xFFFFFFFF, cs, rflags & 0xFFFFFFFF))
        try:
            self.ram.write(new_rsp, frame)
        except ValueError:
            raise InterruptError(f"interrupt stack at {new_rsp:#x} is outside RAM") from None
        if attrs & 0x0F == 0x0E:
            rflags &= ~IF
        rflags &= ~TF
        self.regs.write([new_rsp, ss, rflags, selector, handler])
        return handler
