"""Recordings of the example guests for the debugger tests, and what their ELFs and sources say.

Expected values in those tests come from here (symbols, disassembly, source lines, the recording
run's own output and counts) or from a straight replay, never from hand-copied numbers."""
from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import capstone
import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from cpu.loader import load_kernel
from tests.conftest import ROOT, run_urr
from urr.options import parse_args
from urr.session import Session

_DISASM = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)


@dataclass
class Recording:
    name: str
    kernel: str
    rrfile: str
    icount: int  # instructions recorded
    status: int  # urr's exit status for the recording run
    output: bytes  # serial and debugcon output of the recording run

    def urr_args(self, mode: str = "replay") -> list[str]:
        """-kernel/-icount arguments that record or replay this recording from snapshot init."""
        return ["-kernel", self.kernel, "-icount", f"shift=7,rr={mode},rrfile={self.rrfile},rrsnapshot=init"]

    @cached_property
    def elf(self) -> "Elf":
        return Elf(self.kernel)

    def source_line(self, text: str) -> int:
        """The line number of the one line of the guest's C source that contains `text`."""
        return source_line(os.path.join(ROOT, "guests", f"{self.name}.c"), text)

    def straight_states(self, icounts: list[int]) -> dict[int, tuple[int, str]]:
        """The reference: where a plain replay from boot without snapshots, told to stop at each
        icount, stops, and a hash of all registers and RAM there."""
        opts = parse_args(["-kernel", self.kernel, "-serial", "none", "-snapshots", "off",
                           "-icount", f"shift=7,rr=replay,rrfile={self.rrfile}"])
        session = Session(opts, out=io.BytesIO(), stdin_fd=None)
        out = {}
        try:
            for n in sorted(icounts):
                session.run(n)
                out[n] = (session.machine.icount, session.state_hash())
        finally:
            session.close(None, "test")
        return out


def source_line(path: str, text: str) -> int:
    with open(path) as f:
        found = [n for n, line in enumerate(f, 1) if text in line]
    assert len(found) == 1, f"{text!r} is on lines {found} of {path}"
    return found[0]


class Elf:
    """Symbols (address, size) and instructions of a guest ELF."""

    def __init__(self, path: str) -> None:
        self.symbols: dict[str, tuple[int, int]] = {}
        with open(path, "rb") as f:
            elf = ELFFile(f)
            self.entry = elf["e_entry"]
            for sec in elf.iter_sections():
                if isinstance(sec, SymbolTableSection):
                    for sym in sec.iter_symbols():
                        if sym["st_info"]["type"] in ("STT_FUNC", "STT_OBJECT"):
                            self.symbols[sym.name] = (sym["st_value"], sym["st_size"])
        self.segments = load_kernel(path, 1 << 30).segments

    def addr(self, name: str) -> int:
        return self.symbols[name][0]

    def function_at(self, addr: int) -> str:
        names = [n for n, (a, size) in self.symbols.items() if a <= addr < a + size]
        assert len(names) == 1, f"{addr:#x} is in {names}"
        return names[0]

    def code(self, function: str) -> list[capstone.CsInsn]:
        addr, size = self.symbols[function]
        seg = next(s for s in self.segments if s.paddr <= addr < s.paddr + len(s.data))
        return list(_DISASM.disasm(seg.data[addr - seg.paddr:addr - seg.paddr + size], addr))

    def calls(self, function: str, callee: str) -> list[capstone.CsInsn]:
        """The `call callee` instructions in `function`."""
        target = f"{self.addr(callee):#x}"
        return [i for i in self.code(function) if i.mnemonic == "call" and i.op_str == target]


@pytest.fixture(scope="session")
def recorded(guests: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Recording]:
    """name -> a recording of that example guest (from snapshot init), made once per test run."""
    cache: dict[str, Recording] = {}

    def get(name: str) -> Recording:
        if name not in cache:
            rrfile = str(tmp_path_factory.mktemp(name) / f"{name}.rr")
            kernel = guests[name]
            r = run_urr("-kernel", kernel, "-serial", "stdio", "-icount",
                        f"shift=7,rr=record,rrfile={rrfile},rrsnapshot=init", stdin=b"")
            icount = int(re.search(r"recorded (\d+) instructions", r.note("recorded")).group(1))
            cache[name] = Recording(name, kernel, rrfile, icount, r.status, r.out)
        return cache[name]
    return get
