"""Putting Unicorn's 64-bit engine into a given CPU mode: 64-bit long mode or 32-bit protected.

The machine always runs a UC_MODE_64 engine: on a UC_MODE_32 engine R8-R15 cannot be read
through the API (a no-op with a deprecation warning), which snapshots, digests and GDB need
after a guest switches to long mode itself. But on the 64-bit engine, writing CS, SS, DS or ES
sets only the selector: the hidden descriptor state and the mode flags derived from it (64-bit,
32-bit or 16-bit code, the stack size) keep what they were. Only executing a far transfer loads
them. So `enter` does what a CPU would: with paging off it writes EFER and the GDTR, then runs a
few instructions in scratch RAM (saved and put back) that `lret` to the wanted CS and load SS,
DS and ES from the GDT; then it writes CR4, CR3 and CR0 (turning paging on with EFER.LME set is
what activates long mode). The descriptors are read from the GDT in RAM at that moment, as a
segment load reads them."""
from __future__ import annotations

import struct

from unicorn import Uc, UcError
from unicorn import x86_const as X

MSR_EFER = 0xC0000080
CR0_PG = 1 << 31
SCRATCH_SIZE = 64  # RAM borrowed while the trampoline runs: at 0, or after the GDT if it is there
# lret (to CS:scratch+8, both pushed as 32-bit values, same encoding in 32- and 64-bit code);
# at scratch+8: mov %eax,%ss; mov %ebx,%ds; mov %ebx,%es (the end is scratch+14).
_CODE = bytes([0xCB]) + bytes(7) + bytes([0x8E, 0xD0, 0x8E, 0xDB, 0x8E, 0xC3])
_LOADS, _END, _STACK = 8, 14, 0x30


class ModeError(RuntimeError):
    """The CPU could not be put into the mode (a selector the GDT does not hold, say)."""


def enter(uc: Uc, cr0: int, cr3: int, cr4: int, efer: int, gdtr: tuple, cs: int, ss: int,
          data: int) -> None:
    """Load the control registers, EFER, the GDTR and CS/SS/DS/ES as the CPU would have them."""
    uc.reg_write(X.UC_X86_REG_CR0, cr0 & ~CR0_PG)  # leaves long mode if it was active
    uc.msr_write(MSR_EFER, efer)
    uc.reg_write(X.UC_X86_REG_GDTR, tuple(gdtr))
    base, limit = gdtr[1], gdtr[2]
    scratch = 0 if base >= SCRATCH_SIZE else (base + limit + 16) & ~15
    # The scratch bytes and the descriptors the loads may mark accessed are put back after.
    saved = {scratch: bytes(uc.mem_read(scratch, SCRATCH_SIZE))}
    for sel in (cs, ss, data):
        if sel & ~7 and (sel | 7) <= limit:
            try:
                saved[base + (sel & ~7)] = bytes(uc.mem_read(base + (sel & ~7), 8))
            except UcError:
                pass  # outside RAM: the load below fails and says so
    try:
        uc.mem_write(scratch, _CODE)
        uc.mem_write(scratch + _STACK, struct.pack("<II", scratch + _LOADS, cs))
        uc.reg_write(X.UC_X86_REG_RSP, scratch + _STACK)
        uc.reg_write(X.UC_X86_REG_RAX, ss)
        uc.reg_write(X.UC_X86_REG_RBX, data)
        try:
            uc.emu_start(scratch, scratch + _END)
        except UcError as e:
            raise ModeError(f"cannot load CS {cs:#x} / SS {ss:#x} / data {data:#x} from the GDT: {e}") from None
        if uc.reg_read(X.UC_X86_REG_RIP) != scratch + _END:
            raise ModeError(f"cannot load CS {cs:#x} / SS {ss:#x} / data {data:#x} from the GDT at {base:#x}")
    finally:
        for addr, content in saved.items():
            uc.mem_write(addr, content)
    uc.reg_write(X.UC_X86_REG_CR4, cr4)
    uc.reg_write(X.UC_X86_REG_CR3, cr3)
    uc.reg_write(X.UC_X86_REG_CR0, cr0)
