"""Loading the guest: an ELF64 x86-64 static executable whose PT_LOAD segments go to p_paddr."""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from cpu import boot


class KernelError(ValueError):
    """The kernel file cannot be booted; the message names the file and the reason."""


@dataclass(frozen=True)
class Segment:
    paddr: int
    data: bytes
    memsz: int


@dataclass(frozen=True)
class Kernel:
    path: str
    entry: int
    segments: tuple[Segment, ...]
    sha256: str


def load_kernel(path: str, ram_size: int) -> Kernel:
    """Read and validate the ELF: 64-bit, x86-64, executable, every segment inside RAM."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise KernelError(f"cannot read kernel {path}: {e.strerror}") from None
    try:
        elf = ELFFile(io.BytesIO(raw))
        if elf.elfclass != 64 or elf["e_machine"] != "EM_X86_64":
            raise KernelError(f"kernel {path} is not an ELF64 x86-64 executable")
        if elf["e_type"] != "ET_EXEC":
            raise KernelError(f"kernel {path} is not a static executable (e_type {elf['e_type']})")
        segments = []
        for seg in elf.iter_segments():
            if seg["p_type"] != "PT_LOAD" or seg["p_memsz"] == 0:
                continue
            paddr, memsz, filesz = seg["p_paddr"], seg["p_memsz"], seg["p_filesz"]
            if filesz > memsz or paddr + memsz > ram_size:
                raise KernelError(
                    f"kernel {path}: segment at {paddr:#x}+{memsz:#x} does not fit in {ram_size} bytes of RAM")
            low_end = boot.page_tables_end(ram_size)
            if paddr < low_end and paddr + memsz > boot.GDT_BASE:
                raise KernelError(f"kernel {path}: segment at {paddr:#x}+{memsz:#x} overlaps the boot "
                                  f"GDT and page tables at {boot.GDT_BASE:#x}-{low_end - 1:#x}")
            segments.append(Segment(paddr, seg.data()[:filesz], memsz))
        entry = elf["e_entry"]
    except ELFError as e:
        raise KernelError(f"kernel {path} is not a valid ELF file: {e}") from None
    except (ValueError, IndexError, KeyError, AssertionError) as e:
        if isinstance(e, KernelError):
            raise
        raise KernelError(f"kernel {path} is malformed: {e}") from None
    if not segments:
        raise KernelError(f"kernel {path} has no loadable segments")
    if not any(s.paddr <= entry < s.paddr + s.memsz for s in segments):
        raise KernelError(f"kernel {path}: entry point {entry:#x} is not in a loaded segment")
    return Kernel(path, entry, tuple(segments), hashlib.sha256(raw).hexdigest())
