"""The SYSCALL instruction as the CPU executes it in 64-bit mode.

Unicorn 2.1.4 turns SYSCALL into a call of its hooks and nothing else: no transfer to the
handler the guest set up in IA32_LSTAR. The machine ends the slice right after the instruction
and does the transfer there, as the SDM describes it, so a guest's own system-call layer (the
SDK's, under musl) runs like on hardware, and a replay repeats it from the instruction stream."""
from __future__ import annotations

from unicorn import Uc

from cpu.cpustate import RegisterBatch

MSR_EFER, MSR_STAR, MSR_LSTAR, MSR_SFMASK = 0xC0000080, 0xC0000081, 0xC0000082, 0xC0000084
EFER_SCE, EFER_LMA = 1 << 0, 1 << 10
RF = 1 << 16


class SyscallFault(RuntimeError):
    """SYSCALL raises #UD: EFER.SCE clear, or not in 64-bit mode."""


class SyscallTransfer:
    def __init__(self, uc: Uc) -> None:
        self.uc = uc
        self.regs = RegisterBatch(uc, ("rip", "rflags", "rcx", "r11", "cs", "ss"))

    def enter(self) -> None:
        """RIP is past the SYSCALL: RCX = RIP, R11 = RFLAGS, CS/SS from STAR, RIP = LSTAR, RFLAGS
        masked by SFMASK. CS and SS get flat 64-bit code and data as SYSCALL loads them, without
        reading the GDT (which writing a selector on Unicorn's 64-bit engine also does)."""
        efer = self.uc.msr_read(MSR_EFER)
        if not efer & EFER_SCE or not efer & EFER_LMA:
            raise SyscallFault("unhandled exception #UD invalid opcode (syscall with EFER.SCE clear)")
        rip, rflags, _rcx, _r11, _cs, _ss = self.regs.read()
        selector = (self.uc.msr_read(MSR_STAR) >> 32) & 0xFFFF
        mask = self.uc.msr_read(MSR_SFMASK)
        self.regs.write([self.uc.msr_read(MSR_LSTAR), rflags & ~mask & ~RF & 0xFFFFFFFF, rip,
                         rflags & ~RF, selector & 0xFFFC, (selector + 8) & 0xFFFF])
