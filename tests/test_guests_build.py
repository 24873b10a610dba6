"""The example guests build with the host toolchain into loadable, debuggable ELF64 x86-64 files."""
from __future__ import annotations

import os
import subprocess

import pytest
from elftools.elf.elffile import ELFFile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUESTS_DIR = os.path.join(ROOT, "guests")
BUILD = os.path.join(GUESTS_DIR, "build")
NAMES = ["hello", "ticks", "cpuloop", "disk", "clock", "echo", "corrupt", "spin", "longloop",
         "irqtime", "devices", "boot", "rdrand", "calls", "longcalls",
         "bigmem", "bigmem16", "bigmem1g"] + [
    f"fault-{name}" for name in ("read", "write", "fetch", "ud2", "div0", "gp", "int3", "halt",
                                 "sleep", "idt", "gate", "handler", "stack")]


@pytest.fixture(scope="module")
def built() -> dict[str, str]:
    r = subprocess.run(["make", "-C", GUESTS_DIR], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    return {name: os.path.join(BUILD, f"{name}.elf") for name in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_guest_elf(built, name):
    path = built[name]
    assert os.path.isfile(path), f"{path} was not built"
    with open(path, "rb") as f:
        elf = ELFFile(f)
        assert elf.elfclass == 64
        assert elf["e_machine"] == "EM_X86_64"
        entry = elf["e_entry"]
        loads = [s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]
        assert loads, "no PT_LOAD segment"
        assert any(s["p_vaddr"] <= entry < s["p_vaddr"] + s["p_memsz"] and s["p_flags"] & 1
                   for s in loads), f"entry {entry:#x} is not inside an executable PT_LOAD segment"
        for s in loads:
            assert s["p_paddr"] == s["p_vaddr"]
        assert elf.has_dwarf_info(), "no DWARF debug information"
