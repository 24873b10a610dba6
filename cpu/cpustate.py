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


class RegisterReader:
    """Reads every register of `capture` in ONE `uc_reg_read_batch` call into raw buffers.

    The binding's reg_read costs ~4 us a register and its reg_read_batch ~3 us a register
    (ctypes objects per value); snapshots and digests read ~80 registers, so we prepare the
    id and pointer arrays once and parse the buffers with struct."""

    def __init__(self, uc: Uc) -> None:
        self.uc = uc
        self.layout: list[tuple[str, str]] = []
        ids: list[int] = []
        for name in _U64:
            self.layout.append((name, "u64"))
            ids.append(reg_id(name))
        for name in XMMS:
            self.layout.append((name, "u128"))
            ids.append(reg_id(name))
        for name in TABLES:
            self.layout.append((name, "mmr"))
            ids.append(reg_id(name))
        for name in FPRS:
            self.layout.append((name, "fpr"))
            ids.append(reg_id(name))
        self.buffers = [ctypes.create_string_buffer(32) for _ in ids]
        for name, msr in MSRS.items():
            self.layout.append((name, "msr"))
            ids.append(X.UC_X86_REG_MSR)
            buf = ctypes.create_string_buffer(32)
            struct.pack_into("<I", buf, 0, msr)
            self.buffers.append(buf)
        self.count = len(ids)
        self.ids = (ctypes.c_int32 * self.count)(*ids)
        self.ptrs = (ctypes.c_void_p * self.count)(*[ctypes.addressof(b) for b in self.buffers])

    def read(self) -> dict[str, Any]:
        """Every guest-visible register as ints (tables and x87 registers as lists)."""
        for (name, kind), buf in zip(self.layout, self.buffers):
            if kind == "msr":  # the core overwrites the struct; put the MSR number back
                struct.pack_into("<I", buf, 0, MSRS[name])
        err = uclib.uc_reg_read_batch(self.uc._uch, self.ids, self.ptrs, self.count)
        if err:
            raise UcError(err)
        out: dict[str, Any] = {}
        for (name, kind), buf in zip(self.layout, self.buffers):
            raw = buf.raw
            if kind == "u64":
                out[name] = _U64S.unpack_from(raw)[0]
            elif kind == "u128":
                lo, hi = _U128S.unpack_from(raw)
                out[name] = lo | (hi << 64)
            elif kind == "mmr":
                out[name] = list(_MMRS.unpack_from(raw))
            elif kind == "fpr":
                out[name] = list(_FPRS_.unpack_from(raw))
            else:
                out[name] = _MSRS_.unpack_from(raw)[1]
        return out


_U64S = struct.Struct("<Q")
_U128S = struct.Struct("<QQ")
_MMRS = struct.Struct("<H6xQII")  # uc_x86_mmr: selector, base, limit, flags
_FPRS_ = struct.Struct("<QH")  # uc_x86_float80: mantissa, exponent
_MSRS_ = struct.Struct("<I4xQ")  # uc_x86_msr: rid, value


def restore(uc: Uc, state: dict[str, Any]) -> None:
    """Load a dict made by `capture`."""
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
