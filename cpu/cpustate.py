"""The CPU registers a guest can change, read and written as one JSON-able dict.

Order matters on restore: control registers and EFER first (they decide the mode), then the
descriptor tables (segment loads read the GDT), then selectors, then everything else."""
from __future__ import annotations

import ctypes
import struct
from typing import Any

from unicorn import Uc, UcError
from unicorn.unicorn_py3.unicorn import uclib
from unicorn import x86_const as X

from cpu import cpumode

GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "rflags")
SELECTORS = ("es", "cs", "ss", "ds", "fs", "gs")
CONTROL = ("cr0", "cr2", "cr3", "cr4", "cr8")
TABLES = ("gdtr", "idtr", "ldtr", "tr")
FPU_CTRL = ("fpcw", "fpsw", "fptag", "fip", "fcs", "fdp", "fds", "fop")
BASES = ("fs_base", "gs_base")
MSRS = {"efer": 0xC0000080, "kernel_gs_base": 0xC0000102, "star": 0xC0000081,
        "lstar": 0xC0000082, "sfmask": 0xC0000084, "tsc_aux": 0xC0000103}
XMMS = tuple(f"xmm{i}" for i in range(16))
FPRS = tuple(f"st{i}" for i in range(8))


WRITABLE = frozenset((*GPRS, *SELECTORS, *CONTROL, *FPU_CTRL, *BASES, *XMMS, *FPRS, "mxcsr", *MSRS))


def write_register(uc: Uc, name: str, value: int) -> None:
    """One register by name, as a debugger writes it (x87 registers take their 80-bit value,
    MSRs go by name). ValueError for a name or value it cannot take, or a selector Unicorn
    refuses to load (a #GP in the guest's mode)."""
    if name not in WRITABLE:
        raise ValueError(f"unknown register {name}")
    if value < 0 or value >> (128 if name in XMMS else 80 if name in FPRS else 64):
        raise ValueError(f"{value:#x} does not fit register {name}")
    try:
        if name in FPRS:
            uc.reg_write(reg_id(name), (value & ((1 << 64) - 1), value >> 64))
        elif name in MSRS:
            uc.msr_write(MSRS[name], value)
        else:
            uc.reg_write(reg_id(name), value)
    except UcError as e:
        raise ValueError(f"cannot write {value:#x} to register {name}: {e}") from None


def reg_id(name: str) -> int:
    """Unicorn's id for a register name used in this module."""
    if name == "rflags":
        return X.UC_X86_REG_RFLAGS
    if name.startswith("st"):
        return X.UC_X86_REG_FP0 + int(name[2:])
    if name == "fs_base":
        return X.UC_X86_REG_FS_BASE
    if name == "gs_base":
        return X.UC_X86_REG_GS_BASE
    return getattr(X, f"UC_X86_REG_{name.upper()}")


_U64 = GPRS + SELECTORS + CONTROL + BASES + FPU_CTRL + ("mxcsr",)


class RegisterBatch:
    """A few 64-bit registers read or written in one prepared ctypes call (the executor's hot path)."""

    def __init__(self, uc: Uc, names: tuple[str, ...]) -> None:
        self.uc = uc
        self.count = len(names)
        self.ids = (ctypes.c_int32 * self.count)(*[reg_id(n) for n in names])
        self.values = (ctypes.c_uint64 * self.count)()
        self.ptrs = (ctypes.c_void_p * self.count)(
            *[ctypes.addressof(self.values) + 8 * i for i in range(self.count)])

    def read(self) -> list[int]:
        err = uclib.uc_reg_read_batch(self.uc._uch, self.ids, self.ptrs, self.count)
        if err:
            raise UcError(err)
        return self.values[:]

    def write(self, values: list[int]) -> None:
        self.values[:] = values
        err = uclib.uc_reg_write_batch(self.uc._uch, self.ids, self.ptrs, self.count)
        if err:
            raise UcError(err)


_SLOT = 32  # bytes per register in a raw read
# The slot layout of each kind, padded to _SLOT bytes.
_FORMATS = {"u64": "Q24x", "u128": "QQ16x", "mmr": "H6xQII8x", "fpr": "QH22x", "msr": "I4xQ16x"}
_LAYOUT: list[tuple[str, str]] = (
    [(n, "u64") for n in _U64] + [(n, "u128") for n in XMMS] + [(n, "mmr") for n in TABLES]
    + [(n, "fpr") for n in FPRS] + [(n, "msr") for n in MSRS])
_UNPACK = struct.Struct("<" + "".join(_FORMATS[k] for _, k in _LAYOUT))
RAW_SIZE = _UNPACK.size


def decode(raw: bytes) -> dict[str, Any]:
    """Every guest-visible register as ints (tables and x87 registers as lists), from the bytes
    `RegisterReader.read_raw` returned."""
    if len(raw) != RAW_SIZE:
        raise ValueError(f"raw register state is {len(raw)} bytes, not {RAW_SIZE}")
    values = _UNPACK.unpack(raw)
    n = len(_U64)
    out: dict[str, Any] = dict(zip(_U64, values[:n]))
    for name in XMMS:
        out[name] = values[n] | (values[n + 1] << 64)
        n += 2
    for name in TABLES:
        out[name] = list(values[n:n + 4])
        n += 4
    for name in FPRS:
        out[name] = list(values[n:n + 2])
        n += 2
    for name in MSRS:
        out[name] = values[n + 1]
        n += 2
    return out


class RegisterReader:
    """Reads every register of `capture` in ONE `uc_reg_read_batch` call into one buffer.

    The binding's reg_read costs ~4 us a register and its reg_read_batch ~3 us a register
    (ctypes objects per value); snapshots and digests read ~80 registers, so the ids and
    pointers are prepared once and every value lands in a 32-byte slot of one buffer. A
    snapshot keeps those bytes as they are (`read_raw`) and leaves `decode` to the catalog
    writer's process."""

    def __init__(self, uc: Uc) -> None:
        self.uc = uc
        ids = [X.UC_X86_REG_MSR if kind == "msr" else reg_id(name) for name, kind in _LAYOUT]
        self.count = len(ids)
        self.buffer = ctypes.create_string_buffer(RAW_SIZE)
        # The core reads an MSR's number from its slot and overwrites the slot: every read
        # starts from this template, which holds the numbers.
        template = bytearray(RAW_SIZE)
        for i, (name, kind) in enumerate(_LAYOUT):
            if kind == "msr":
                struct.pack_into("<I", template, i * _SLOT, MSRS[name])
        self.template = bytes(template)
        base = ctypes.addressof(self.buffer)
        self.ids = (ctypes.c_int32 * self.count)(*ids)
        self.ptrs = (ctypes.c_void_p * self.count)(*[base + i * _SLOT for i in range(self.count)])

    def read_raw(self) -> bytes:
        """Every register, undecoded (see `decode`)."""
        ctypes.memmove(self.buffer, self.template, RAW_SIZE)
        err = uclib.uc_reg_read_batch(self.uc._uch, self.ids, self.ptrs, self.count)
        if err:
            raise UcError(err)
        return self.buffer.raw

    def read(self) -> dict[str, Any]:
        """Every guest-visible register as ints (tables and x87 registers as lists)."""
        return decode(self.read_raw())


def restore(uc: Uc, state: dict[str, Any]) -> None:
    """Load a dict made by `capture`. The mode (long or 32-bit protected, with the hidden
    segment state) is entered as the CPU would enter it (cpu/cpumode.py); the writes below
    then repeat the same control and selector values, which changes nothing."""
    cpumode.enter(uc, state["cr0"], state["cr3"], state["cr4"], state["efer"], state["gdtr"],
                  state["cs"], state["ss"], state["ds"], state["es"])
    uc.msr_write(MSRS["efer"], state["efer"])
    for name in CONTROL:
        uc.reg_write(reg_id(name), state[name])
    for name in TABLES:
        uc.reg_write(reg_id(name), tuple(state[name]))
    for name in SELECTORS:
        uc.reg_write(reg_id(name), state[name])
    for name in GPRS + BASES + FPU_CTRL + XMMS + ("mxcsr",):
        uc.reg_write(reg_id(name), state[name])
    for name in FPRS:
        uc.reg_write(reg_id(name), tuple(state[name]))
    for name, msr in MSRS.items():
        if name != "efer":
            uc.msr_write(msr, state[name])
    uc.reg_write(reg_id("fs_base"), state["fs_base"])
    uc.reg_write(reg_id("gs_base"), state["gs_base"])
