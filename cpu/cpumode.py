"""Putting Unicorn's 64-bit engine into a given CPU mode: 64-bit long mode or 32-bit protected.

The machine always runs a UC_MODE_64 engine: on a UC_MODE_32 engine R8-R15 cannot be read
through the API (a no-op with a deprecation warning), which snapshots, digests and GDB need
after a guest switches to long mode itself. But on the 64-bit engine, writing CS, SS, DS or ES
sets only the selector: the hidden descriptor state and the mode flags derived from it (64-bit,
32-bit or 16-bit code, the stack size) keep what they were. Only executing a far transfer loads
them, and EFER.LMA (read-only to WRMSR) is only set by turning paging on with EFER.LME.

So `enter` does what a CPU would, in RAM it borrows and puts back (scratch: 28 KiB at 0, or
after the GDT if that is there): paging off (leaving long mode if it was active), EFER and the
GDTR written; for a long-mode target, paging on through temporary identity page tables of the
first 4 GiB in the scratch (which activates long mode); then a few instructions that `lret` to
the wanted CS and load SS, DS and ES from the GDT; finally the real CR4, CR3 and CR0. The
descriptors are read at GDTR.base as a physical address below 4 GiB, as the guest had them."""
from __future__ import annotations

import functools
import struct

from unicorn import Uc, UcError
from unicorn import x86_const as X

MSR_EFER = 0xC0000080
CR0_PE, CR0_ET, CR0_PG = 1 << 0, 1 << 4, 1 << 31
CR4_PAE = 1 << 5
EFER_LMA = 1 << 10
PAGE = 4096
RFLAGS_RESET = 0x2  # bit 1 is always set; the trampoline runs with no other flag
_TABLES = 6 * PAGE  # PML4, PDPT, 4 page directories: 4 GiB in 2 MiB pages
_CODE_AT = _TABLES
# lret (to CS:code+8, both pushed as 32-bit values, same encoding in 32- and 64-bit code);
# at code+8: mov %eax,%ss; mov %ebx,%ds; mov %ecx,%es (the end is code+14).
_CODE = bytes([0xCB]) + bytes(7) + bytes([0x8E, 0xD0, 0x8E, 0xDB, 0x8E, 0xC1])
_LOADS, _END, _STACK = 8, 14, 0x30
SCRATCH_SIZE = _TABLES + PAGE


class ModeError(RuntimeError):
    """The CPU could not be put into the mode (a selector the GDT does not hold, say)."""


@functools.lru_cache(maxsize=4)
def _identity_tables(at: int) -> bytes:
    """The tables for a scratch at `at` (made once: building them took ~1.5 ms of a restore)."""
    pml4 = struct.pack("<Q", (at + PAGE) | 0x23).ljust(PAGE, b"\0")
    pdpt = b"".join(struct.pack("<Q", (at + (2 + i) * PAGE) | 0x23) for i in range(4)).ljust(PAGE, b"\0")
    pds = b"".join(struct.pack("<Q", (i << 21) | 0xE3) for i in range(4 * 512))
    return pml4 + pdpt + pds


def enter(uc: Uc, cr0: int, cr3: int, cr4: int, efer: int, gdtr: tuple, cs: int, ss: int,
          ds: int, es: int) -> None:
    """Load the control registers, EFER, the GDTR and CS/SS/DS/ES as the CPU would have them."""
    base, limit = gdtr[1], gdtr[2]
    if base + limit >= 1 << 32:
        raise ModeError(f"the GDT at {base:#x} is above 4 GiB")
    scratch = 0 if base >= SCRATCH_SIZE else -(-(base + limit + 1) // PAGE) * PAGE
    long_mode = bool(efer & EFER_LMA and cr0 & CR0_PG)
    saved = {scratch: bytes(uc.mem_read(scratch, SCRATCH_SIZE))}
    for sel in (cs, ss, ds, es):  # descriptors the loads may mark accessed
        if sel & ~7 and (sel | 7) <= limit:
            try:
                saved[base + (sel & ~7)] = bytes(uc.mem_read(base + (sel & ~7), 8))
            except UcError:
                pass  # outside RAM: the load below fails and says so
    code = scratch + _CODE_AT
    try:
        # Paging on, then off: turning it off is what clears EFER.LMA, from any state (Unicorn's
        # reset has LMA set with paging off). Nothing runs in between.
        uc.reg_write(X.UC_X86_REG_CR4, CR4_PAE)
        uc.reg_write(X.UC_X86_REG_CR0, CR0_PE | CR0_ET | CR0_PG)
        uc.reg_write(X.UC_X86_REG_CR0, CR0_PE | CR0_ET)
        uc.msr_write(MSR_EFER, efer)
        uc.reg_write(X.UC_X86_REG_GDTR, tuple(gdtr))
        if long_mode:
            uc.mem_write(scratch, _identity_tables(scratch))
            uc.reg_write(X.UC_X86_REG_CR3, scratch)
            uc.reg_write(X.UC_X86_REG_CR0, CR0_PE | CR0_ET | CR0_PG)  # EFER.LME: long mode
        uc.mem_write(code, _CODE)
        uc.mem_write(code + _STACK, struct.pack("<II", code + _LOADS, cs))
        uc.reg_write(X.UC_X86_REG_RSP, code + _STACK)
        # The loads run with the flags reset: whatever the machine has (a debugger may have
        # set VM or TF) would change how they run; the caller restores the guest's own.
        uc.reg_write(X.UC_X86_REG_EFLAGS, RFLAGS_RESET)
        uc.reg_write(X.UC_X86_REG_RAX, ss)
        uc.reg_write(X.UC_X86_REG_RBX, ds)
        uc.reg_write(X.UC_X86_REG_RCX, es)
        try:
            uc.emu_start(code, code + _END)
        except UcError as e:
            raise ModeError(f"cannot load CS {cs:#x} SS {ss:#x} DS {ds:#x} ES {es:#x} from the GDT: {e}") from None
        if uc.reg_read(X.UC_X86_REG_RIP) != code + _END:
            raise ModeError(f"cannot load CS {cs:#x} SS {ss:#x} DS {ds:#x} ES {es:#x} from the GDT at {base:#x}")
    finally:
        for addr, content in saved.items():
            uc.mem_write(addr, content)
        uc.ctl_flush_tb()  # the trampoline's translation must not outlive its bytes
    uc.reg_write(X.UC_X86_REG_CR4, cr4)
    uc.reg_write(X.UC_X86_REG_CR3, cr3)
    uc.reg_write(X.UC_X86_REG_CR0, cr0)
