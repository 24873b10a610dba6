"""Loading the guest from what QEMU's -kernel takes, detected from the file as QEMU does.

- an ELF (32- or 64-bit) with a PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY): PT_LOAD segments to
  p_paddr, entered in 32-bit protected mode at the note's address;
- a Multiboot (v1) kernel: the header in the first 8 KiB, 4-byte aligned; loaded from the
  header's a.out-kludge addresses (flag 16) or else as an ELF (PT_LOAD to p_paddr), entered in
  32-bit protected mode at the header's or the ELF's entry point;
- a Multiboot 2 kernel (which QEMU does not boot; detected as GRUB does, cpu/multiboot2.py):
  loaded from its address tag or else as an ELF, entered as Multiboot v1 at its entry address
  tag or the ELF's entry point (a file with both headers boots as v1, as QEMU boots it);
- an ELF64 x86-64 executable: PT_LOAD segments to p_paddr, entered in 64-bit long mode.
`-initrd` files are the Multiboot modules / PVH modules. Where everything goes in RAM and the
CPU state at entry are cpu/boot.py's."""
from __future__ import annotations

import hashlib
import io
import os
import stat
import struct
from dataclasses import dataclass
from typing import Optional

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from cpu import multiboot2

ELF64, MULTIBOOT, MULTIBOOT2, PVH = "elf64", "multiboot", "multiboot2", "pvh"
MULTIBOOT_MAGIC = 0x1BADB002
MULTIBOOT_SEARCH = 8192
MB_PAGE_ALIGN, MB_MEMORY_INFO, MB_VIDEO_MODE, MB_AOUT_KLUDGE = 1 << 0, 1 << 1, 1 << 2, 1 << 16
MB_KNOWN_REQUIRED = MB_PAGE_ALIGN | MB_MEMORY_INFO | MB_VIDEO_MODE  # bits 0-15 a loader must know
XEN_ELFNOTE_PHYS32_ENTRY = 18
MAX_FILE = 1 << 30  # the largest kernel or -initrd file read: far beyond any guest, short of a hang


class KernelError(ValueError):
    """The kernel file cannot be booted; the message names the file and the reason."""


@dataclass(frozen=True)
class Segment:
    paddr: int
    data: bytes
    memsz: int


@dataclass(frozen=True)
class Module:
    """An -initrd file: its command line (the file name and what follows it) and content."""
    cmdline: str
    data: bytes


@dataclass(frozen=True)
class Kernel:
    path: str
    entry: int
    segments: tuple[Segment, ...]
    sha256: str
    format: str = ELF64
    modules: tuple[Module, ...] = ()
    page_align_modules: bool = False  # Multiboot flag 0
    relocatable: bool = False  # a Multiboot 2 relocatable header: the boot tells the load base

    @property
    def end(self) -> int:
        """The first byte after the highest loaded segment."""
        return max(s.paddr + s.memsz for s in self.segments)


def load_kernel(path: str, ram_size: int, initrd: Optional[str] = None) -> Kernel:
    """Read the kernel, detect its format, validate it; read the -initrd modules."""
    raw = _read(path, "kernel")
    modules = tuple(read_modules(initrd)) if initrd else ()
    digest = hashlib.sha256(raw).hexdigest()
    elf = _elf(raw, path)
    if elf is not None:
        entry = _pvh_entry(elf, path)
        if entry is not None:
            segments = _elf_segments(elf, path, ram_size)
            _check_entry(path, entry, segments, "PVH entry note")
            return Kernel(path, entry, segments, digest, PVH, modules)
    multiboot = _multiboot_header(raw, path)
    if multiboot is not None:
        offset, flags = multiboot
        if flags & MB_AOUT_KLUDGE:
            if offset + 32 > len(raw):
                raise KernelError(f"kernel {path}: Multiboot header truncated")
            header_addr, load_addr, load_end, bss_end, entry = struct.unpack_from("<5I", raw, offset + 12)
            segments = _aout_kludge(raw, path, offset, (header_addr, load_addr, load_end, bss_end), ram_size)
        elif elf is not None:
            segments, entry = _elf_segments(elf, path, ram_size), elf["e_entry"]
        else:
            raise KernelError(f"kernel {path}: Multiboot header without load addresses (flag 16) "
                              "in a file that is not ELF")
        _check_entry(path, entry, segments, "Multiboot entry point")
        return Kernel(path, entry, segments, digest, MULTIBOOT, modules, bool(flags & MB_PAGE_ALIGN))
    try:
        mb2 = multiboot2.find_header(raw)
    except multiboot2.HeaderError as e:
        raise KernelError(f"kernel {path}: {e}") from None
    if mb2 is not None:
        return _multiboot2_kernel(raw, path, elf, mb2, digest, modules, ram_size)
    if elf is None:
        raise KernelError(f"kernel {path} is not a supported format (ELF64 x86-64, Multiboot, "
                          "Multiboot 2, or ELF with a PVH entry note)")
    if elf.elfclass != 64 or elf["e_machine"] != "EM_X86_64":
        raise KernelError(f"kernel {path} is a 32-bit or non-x86-64 ELF without a Multiboot "
                          "header or PVH entry note")
    if initrd:
        raise KernelError(f"-initrd needs a Multiboot or PVH kernel; {path} is a plain ELF64 kernel")
    segments = _elf_segments(elf, path, ram_size)
    _check_entry(path, elf["e_entry"], segments, "entry point")
    return Kernel(path, elf["e_entry"], segments, digest)


def _read(path: str, what: str) -> bytes:
    """A regular file's bytes, up to MAX_FILE: a device or pipe (`/dev/zero`) would be read
    until memory runs out, and a file that large is no guest."""
    try:
        with open(path, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise KernelError(f"cannot read {what} {path}: not a regular file")
            data = f.read(MAX_FILE + 1)
    except OSError as e:
        raise KernelError(f"cannot read {what} {path}: {e.strerror}") from None
    if len(data) > MAX_FILE:
        raise KernelError(f"cannot read {what} {path}: larger than {MAX_FILE >> 20} MiB")
    return data


def read_modules(initrd: str) -> list[Module]:
    """QEMU's -initrd for Multiboot: 'FILE [ARGS],FILE [ARGS]' (',,' is a literal comma)."""
    out = []
    for item in initrd.replace(",,", "\0").split(","):
        item = item.replace("\0", ",").strip()
        if item:
            out.append(Module(item, _read(item.split()[0], "-initrd file")))
    return out


def _elf(raw: bytes, path: str) -> Optional[ELFFile]:
    if not raw.startswith(b"\x7fELF"):
        return None
    try:
        elf = ELFFile(io.BytesIO(raw))
        machine = elf["e_machine"]
        short = _past_end(elf, len(raw))
        for seg in elf.iter_segments():  # every header readable
            seg.data()
    except (ELFError, ValueError, struct.error) as e:
        raise KernelError(f"kernel {path} is not a valid ELF file: {e}") from None
    if short:
        raise KernelError(f"kernel {path} is truncated or malformed: {short} past the end of "
                          f"the file ({len(raw)} bytes)")
    if machine not in ("EM_X86_64", "EM_386"):
        raise KernelError(f"kernel {path} is an ELF for {machine}, not x86")
    if elf["e_type"] != "ET_EXEC":
        raise KernelError(f"kernel {path} is not a static executable (e_type {elf['e_type']})")
    return elf


def _past_end(elf: ELFFile, size: int) -> Optional[str]:
    """What the ELF's headers place past the end of its `size` bytes, or None. pyelftools reads
    such bytes short without a word, and a segment's missing bytes would load as zeros."""
    def table(what: str, offset: int, length: int) -> Optional[str]:
        return f"its {what} (offset {offset:#x}, {length} bytes) runs" if offset + length > size else None

    problem = table("program header table", elf["e_phoff"], elf["e_phnum"] * elf["e_phentsize"])
    if problem:
        return problem
    for n, seg in enumerate(elf.iter_segments()):
        if seg["p_filesz"] and seg["p_offset"] + seg["p_filesz"] > size:
            return f"segment {n} (file offset {seg['p_offset']:#x}, {seg['p_filesz']:#x} bytes) runs"
    return table("section header table", elf["e_shoff"], elf["e_shnum"] * elf["e_shentsize"])


def _elf_segments(elf: ELFFile, path: str, ram_size: int) -> tuple[Segment, ...]:
    segments = []
    try:
        for seg in elf.iter_segments():
            if seg["p_type"] != "PT_LOAD" or seg["p_memsz"] == 0:
                continue
            paddr, memsz, filesz = seg["p_paddr"], seg["p_memsz"], seg["p_filesz"]
            if filesz > memsz:
                raise KernelError(f"kernel {path}: segment at {paddr:#x} has more file bytes than memory")
            segments.append(Segment(paddr, seg.data()[:filesz], memsz))
    except (ELFError, ValueError, IndexError, KeyError, AssertionError, struct.error) as e:
        if isinstance(e, KernelError):
            raise
        raise KernelError(f"kernel {path} is malformed: {e}") from None
    if not segments:
        raise KernelError(f"kernel {path} has no loadable segments")
    _check_fits(path, segments, ram_size)
    return tuple(segments)


def _check_fits(path: str, segments: list[Segment], ram_size: int) -> None:
    for s in segments:
        if s.paddr + s.memsz > ram_size:
            raise KernelError(f"kernel {path}: segment at {s.paddr:#x}+{s.memsz:#x} does not fit in "
                              f"{ram_size} bytes of RAM")


def _check_entry(path: str, entry: int, segments: tuple[Segment, ...], what: str) -> None:
    if not any(s.paddr <= entry < s.paddr + s.memsz for s in segments):
        raise KernelError(f"kernel {path}: {what} {entry:#x} is not in a loaded segment")


def _pvh_entry(elf: ELFFile, path: str) -> Optional[int]:
    """The XEN_ELFNOTE_PHYS32_ENTRY note's address, from PT_NOTE segments or note sections."""
    try:
        holders = [s for s in elf.iter_segments() if s["p_type"] == "PT_NOTE"]
        holders += [s for s in elf.iter_sections() if s["sh_type"] == "SHT_NOTE"]
        for holder in holders:
            for note in holder.iter_notes():
                if note["n_name"] == "Xen" and note["n_type"] == XEN_ELFNOTE_PHYS32_ENTRY:
                    desc = note["n_desc"]
                    desc = desc.encode("latin-1") if isinstance(desc, str) else bytes(desc)
                    if len(desc) not in (4, 8):
                        raise KernelError(f"kernel {path}: PVH entry note of {len(desc)} bytes")
                    return int.from_bytes(desc, "little")
    except (ELFError, ValueError, struct.error) as e:
        raise KernelError(f"kernel {path}: unreadable ELF notes: {e}") from None
    return None


def _multiboot_header(raw: bytes, path: str) -> Optional[tuple[int, int]]:
    """(offset, flags) of the first Multiboot v1 header in the first 8 KiB, checked."""
    area = raw[:MULTIBOOT_SEARCH]
    for offset in range(0, len(area) - 11, 4):
        magic, flags, checksum = struct.unpack_from("<III", area, offset)
        if magic != MULTIBOOT_MAGIC:
            continue
        if (magic + flags + checksum) & 0xFFFFFFFF:
            raise KernelError(f"kernel {path}: Multiboot header at offset {offset:#x} has a bad "
                              f"checksum ({checksum:#010x})")
        unknown = flags & 0xFFFF & ~MB_KNOWN_REQUIRED
        if unknown:
            raise KernelError(f"kernel {path}: Multiboot header requires features urr does not "
                              f"know (flags {unknown:#x})")
        return offset, flags
    return None


def _aout_kludge(raw: bytes, path: str, offset: int, fields: tuple[int, int, int, int],
                 ram_size: int) -> tuple[Segment, ...]:
    """The image a Multiboot header's address fields (header_addr, load_addr, load_end_addr,
    bss_end_addr) describe: file bytes from the header's position minus (header_addr -
    load_addr), load_end - load_addr of them (0: to the end of the file), zeroed up to bss_end.
    Multiboot 2's load_addr -1 means the file's start."""
    header_addr, load_addr, load_end, bss_end = fields
    if load_addr == 0xFFFFFFFF:
        load_addr = header_addr - offset
    start = offset - (header_addr - load_addr)
    if load_addr > header_addr or start < 0:
        raise KernelError(f"kernel {path}: impossible Multiboot addresses: load_addr {load_addr:#x} "
                          f"above header_addr {header_addr:#x}, or before the file's start")
    size = (load_end - load_addr) if load_end else len(raw) - start
    if size <= 0 or start + size > len(raw):
        raise KernelError(f"kernel {path}: impossible Multiboot addresses: load_end_addr {load_end:#x} "
                          f"is not within the file loaded at {load_addr:#x}")
    if bss_end and bss_end < load_addr + size:
        raise KernelError(f"kernel {path}: impossible Multiboot addresses: bss_end_addr {bss_end:#x} "
                          f"is below load_end_addr {load_addr + size:#x}")
    memsz = bss_end - load_addr if bss_end else size
    segment = Segment(load_addr, raw[start:start + size], memsz)
    _check_fits(path, [segment], ram_size)
    return (segment,)


def _multiboot2_kernel(raw: bytes, path: str, elf: Optional[ELFFile], header: multiboot2.Header,
                       digest: str, modules: tuple[Module, ...], ram_size: int) -> Kernel:
    """Loaded from the address tag or else as an ELF; entered at the entry tag's address or
    else the ELF's entry point."""
    if header.address is not None:
        segments = _aout_kludge(raw, path, header.offset, header.address, ram_size)
    elif elf is not None:
        segments = _elf_segments(elf, path, ram_size)
    else:
        raise KernelError(f"kernel {path}: Multiboot 2 header without an address tag in a file that is not ELF")
    entry = header.entry if header.entry is not None else elf["e_entry"]
    _check_entry(path, entry, segments, "Multiboot 2 entry point")
    try:
        multiboot2.check_relocatable(header, min(s.paddr for s in segments),
                                     max(s.paddr + s.memsz for s in segments))
    except multiboot2.HeaderError as e:
        raise KernelError(f"kernel {path}: {e}") from None
    return Kernel(path, entry, segments, digest, MULTIBOOT2, modules, True, header.relocatable is not None)
