"""What a boot loader leaves in low RAM and in the CPU before the guest's first instruction.

The long-mode entry is architecturally valid, as a real loader leaves it: paging on (long mode
requires it) through identity page tables, CR0 = PE MP ET NE PG (EM clear), CR4 = PAE OSFXSR
OSXMMEXCPT, EFER = LME LMA, so SSE and x87 work at the first instruction.

Low RAM used by the boot (documented in docs/replay.md, "Boot contract"):
  0x0800  the boot GDT (null, 64-bit code 0x08, data 0x10, 32-bit code 0x18, 32-bit data 0x20)
  0x1000  PML4, 0x2000 PDPT, 0x3000.. one page directory per GiB mapped (2 MiB pages; the first
          4 GiB, or all of RAM if larger): identity, A and D bits preset so that the CPU never
          writes them."""
from __future__ import annotations

import struct

GDT_BASE = 0x800
CODE64, DATA, CODE32, DATA32 = 0x08, 0x10, 0x18, 0x20
GDT = (0,
       0x00209A0000000000,  # 0x08: 64-bit code, DPL 0
       0x0000920000000000,  # 0x10: data (64-bit mode ignores base and limit)
       0x00CF9A000000FFFF,  # 0x18: 32-bit flat code, 4 GiB
       0x00CF92000000FFFF)  # 0x20: 32-bit flat data, 4 GiB
PML4_BASE = 0x1000
GIB = 1 << 30
PAGE = 4096

CR0_PE, CR0_MP, CR0_ET, CR0_NE, CR0_PG = 1 << 0, 1 << 1, 1 << 4, 1 << 5, 1 << 31
CR4_PAE, CR4_OSFXSR, CR4_OSXMMEXCPT = 1 << 5, 1 << 9, 1 << 10
EFER_LME, EFER_LMA = 1 << 8, 1 << 10
MSR_EFER = 0xC0000080

LONG_MODE_CR0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_PG
LONG_MODE_CR4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT
LONG_MODE_EFER = EFER_LME | EFER_LMA
PROTECTED_CR0 = CR0_PE | CR0_ET  # what Multiboot and PVH promise: PE on, paging off
# The x87 and SSE state after reset / FNINIT: every exception masked, round to nearest, 64-bit
# x87 precision, the x87 stack empty (Unicorn's own reset leaves them all zero: unmasked).
FPCW, FPTAG, MXCSR = 0x037F, 0xFFFF, 0x1F80


def gdt_bytes() -> bytes:
    return b"".join(struct.pack("<Q", d) for d in GDT)


def page_tables_end(ram_size: int) -> int:
    """The first byte after the identity page tables for this RAM size."""
    return PML4_BASE + 2 * PAGE + _gib_mapped(ram_size) * PAGE


def _gib_mapped(ram_size: int) -> int:
    return max(4, -(-ram_size // GIB))


def identity_page_tables(ram_size: int) -> bytes:
    """PML4, PDPT and page directories mapping virtual = physical with 2 MiB pages, placed at
    PML4_BASE. Present, writable, accessed, dirty (no walk ever writes them back)."""
    gib = _gib_mapped(ram_size)
    if gib > 512:
        raise ValueError("RAM above 512 GiB is not supported")
    present_rw_a = 0x1 | 0x2 | 0x20
    pdpt_base = PML4_BASE + PAGE
    pd_base = pdpt_base + PAGE
    pml4 = struct.pack("<Q", pdpt_base | present_rw_a).ljust(PAGE, b"\0")
    pdpt = b"".join(struct.pack("<Q", (pd_base + i * PAGE) | present_rw_a) for i in range(gib))
    large_dirty = present_rw_a | 0x40 | 0x80
    pds = b"".join(struct.pack("<Q", (i << 21) | large_dirty) for i in range(gib * 512))
    return pml4 + pdpt.ljust(PAGE, b"\0") + pds
