"""What a boot loader leaves in low RAM and in the CPU before the guest's first instruction.

The long-mode entry (ELF64) is architecturally valid, as a real loader leaves it: paging on
(long mode requires it) through identity page tables, CR0 = PE MP ET NE PG (EM clear), CR4 = PAE
OSFXSR OSXMMEXCPT, EFER = LME LMA, so SSE and x87 work at the first instruction. Multiboot and
PVH kernels are entered in 32-bit protected mode (CR0 = PE, paging off) with their information
structure in EBX, as their specifications say (Multiboot 2 too, with its own magic in EAX).

Low RAM used by the boot (documented in docs/replay.md, "Boot contract"):
  0x0800  the boot GDT (null, 64-bit code 0x08, data 0x10, 32-bit code 0x18, 32-bit data 0x20)
  0x1000  PML4, 0x2000 PDPT, 0x3000.. one page directory per GiB mapped (2 MiB pages; the first
          4 GiB, or all of RAM if larger): identity, A and D bits preset so that the CPU never
          writes them (long-mode entry only; the 32-bit entries leave it zero)
  then    the boot information: the command line, and the Multiboot information (v1 or 2) or
          the PVH start info with its memory map and module list (0x7000 for RAM up to 4 GiB)
Modules (-initrd) go after the kernel's highest segment, each page aligned."""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

from cpu import multiboot2
from cpu.loader import ELF64, MULTIBOOT, MULTIBOOT2, Kernel, KernelError

GDT_BASE = 0x800
CODE64, DATA, CODE32, DATA32 = 0x08, 0x10, 0x18, 0x20
GDT = (0,
       0x00209B0000000000,  # 0x08: 64-bit code, DPL 0
       0x0000930000000000,  # 0x10: data (64-bit mode ignores base and limit)
       0x00CF9B000000FFFF,  # 0x18: 32-bit flat code, 4 GiB
       0x00CF93000000FFFF)  # 0x20: 32-bit flat data, 4 GiB
# (accessed bits preset: loading a segment never writes the GDT)
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


MULTIBOOT_BOOTLOADER_MAGIC = 0x2BADB002
PVH_START_MAGIC = 0x336EC578
MAX_CMDLINE = 4095
LOW_RAM_END = 0x9FC00  # a PC's conventional memory; above it, up to 1 MiB, is reserved
MEMORY_USABLE, MEMORY_RESERVED = 1, 2


@dataclass
class BootPlan:
    """What the boot writes into RAM and the CPU state at the kernel's first instruction."""
    writes: list[tuple[int, bytes]] = field(default_factory=list)
    long_mode: bool = True
    registers: dict[str, int] = field(default_factory=dict)  # rip, rsp and what the format passes


def plan(kernel: Kernel, ram_size: int, cmdline: str) -> BootPlan:
    """The boot of `kernel` in `ram_size` bytes of RAM with this command line; KernelError when
    something does not fit."""
    raw_cmdline = cmdline.encode()
    if len(raw_cmdline) > MAX_CMDLINE or b"\0" in raw_cmdline:
        raise KernelError(f"the command line must be at most {MAX_CMDLINE} bytes without NUL")
    info = _InfoArea(page_tables_end(ram_size))
    cmdline_addr = info.add(raw_cmdline + b"\0")
    out = BootPlan()
    for seg in kernel.segments:
        out.writes.append((seg.paddr, seg.data + bytes(seg.memsz - len(seg.data))))
    out.writes.append((GDT_BASE, gdt_bytes()))
    stack_top = min(ram_size, 0xFFFFF000) if kernel.format != ELF64 else ram_size
    out.registers["rip"] = kernel.entry
    out.registers["rsp"] = stack_top & ~0xF
    if kernel.format == ELF64:
        out.writes.append((PML4_BASE, identity_page_tables(ram_size)))
        out.registers.update(rdi=ram_size, rsi=cmdline_addr)
    else:
        out.long_mode = False
        modules = _place_modules(kernel, ram_size, out.writes)
        if kernel.format == MULTIBOOT:
            out.registers.update(rax=MULTIBOOT_BOOTLOADER_MAGIC,
                                 rbx=_multiboot_info(info, ram_size, cmdline_addr, modules))
        elif kernel.format == MULTIBOOT2:
            load_base = min(s.paddr for s in kernel.segments) if kernel.relocatable else None
            mbi = multiboot2.information(raw_cmdline, ram_size, LOW_RAM_END // 1024,
                                         _memory_map(ram_size), modules, load_base)
            out.registers.update(rax=multiboot2.BOOTLOADER_MAGIC, rbx=info.add(mbi))
        else:
            out.registers["rbx"] = _pvh_start_info(info, ram_size, cmdline_addr, modules)
    out.writes.append((info.base, bytes(info.data)))
    _check_overlaps(kernel, info.end)
    return out


class _InfoArea:
    """The boot information structures, laid out one after the other (16-byte aligned)."""

    def __init__(self, base: int) -> None:
        self.base = base
        self.data = bytearray()

    @property
    def end(self) -> int:
        return self.base + len(self.data)

    def add(self, content: bytes) -> int:
        self.data += bytes(-len(self.data) % 16)
        addr = self.end
        self.data += content
        return addr


def _memory_map(ram_size: int) -> list[tuple[int, int, int]]:
    ranges = [(0, LOW_RAM_END, MEMORY_USABLE), (LOW_RAM_END, (1 << 20) - LOW_RAM_END, MEMORY_RESERVED)]
    if ram_size > 1 << 20:
        ranges.append((1 << 20, ram_size - (1 << 20), MEMORY_USABLE))
    return ranges


def _place_modules(kernel: Kernel, ram_size: int, writes: list[tuple[int, bytes]]) -> list[tuple[int, int, str]]:
    """Each module page aligned after the kernel: (start, end, command line)."""
    placed = []
    addr = -(-kernel.end // PAGE) * PAGE
    for module in kernel.modules:
        end = addr + len(module.data)
        if end > ram_size:
            raise KernelError(f"-initrd {module.cmdline.split()[0]} does not fit in RAM "
                              f"({len(module.data)} bytes at {addr:#x}, RAM ends at {ram_size:#x})")
        writes.append((addr, module.data))
        placed.append((addr, end, module.cmdline))
        addr = -(-end // PAGE) * PAGE
    return placed


def _multiboot_info(info: _InfoArea, ram_size: int, cmdline_addr: int,
                    modules: list[tuple[int, int, str]]) -> int:
    """The Multiboot information structure: memory sizes and map, command line, modules."""
    mmap = b"".join(struct.pack("<IQQI", 20, base, length, kind) for base, length, kind in _memory_map(ram_size))
    mmap_addr = info.add(mmap)
    entries = b"".join(struct.pack("<IIII", start, end, info.add(text.encode() + b"\0"), 0)
                       for start, end, text in modules)
    mods_addr = info.add(entries) if modules else 0
    name_addr = info.add(b"urr\0")
    flags = (1 << 0) | (1 << 2) | (1 << 3) | (1 << 6) | (1 << 9)  # mem, cmdline, mods, mmap, name
    fields = struct.pack("<IIIIIII16xII", flags, LOW_RAM_END // 1024, (ram_size - (1 << 20)) // 1024,
                         0xFFFFFFFF, cmdline_addr, len(modules), mods_addr, len(mmap), mmap_addr)
    fields += struct.pack("<IIIII", 0, 0, 0, name_addr, 0) + bytes(16)  # drives, config, name, apm, vbe
    return info.add(fields)


def _pvh_start_info(info: _InfoArea, ram_size: int, cmdline_addr: int,
                    modules: list[tuple[int, int, str]]) -> int:
    """struct hvm_start_info (version 1) with its memory map and module list."""
    memmap = _memory_map(ram_size)
    memmap_addr = info.add(b"".join(struct.pack("<QQII", base, length, kind, 0) for base, length, kind in memmap))
    entries = b"".join(struct.pack("<QQQQ", start, end - start, info.add(text.encode() + b"\0"), 0)
                       for start, end, text in modules)
    modlist_addr = info.add(entries) if modules else 0
    return info.add(struct.pack("<IIIIQQQQII", PVH_START_MAGIC, 1, 0, len(modules), modlist_addr,
                                cmdline_addr, 0, memmap_addr, len(memmap), 0))


def _check_overlaps(kernel: Kernel, low_end: int) -> None:
    if low_end > LOW_RAM_END:
        raise KernelError(f"the boot information does not fit below {LOW_RAM_END:#x}")
    for seg in kernel.segments:
        if seg.paddr < low_end and seg.paddr + seg.memsz > GDT_BASE:
            raise KernelError(f"kernel {kernel.path}: segment at {seg.paddr:#x}+{seg.memsz:#x} overlaps "
                              f"the boot data at {GDT_BASE:#x}-{low_end - 1:#x}")
