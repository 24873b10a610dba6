"""Exact instruction counts inside and after a Unicorn slice.

Unicorn implements `emu_start(count=N)` with an internal per-instruction hook that increments a
private 64-bit counter (`uc->emu_counter`); no API reads it (upstream issues #1452, #1597, #2206).
Without it, the position of a mid-slice event (an I/O access, HLT, a breakpoint) is unknown.
We locate the field once per process by calibration: run a known loop with two different counts
on a scratch engine and find the one 64-bit word of the engine struct that tracks them. The
semantics, verified by the calibration itself:

- inside a hook fired by the k-th instruction of a slice, the counter reads k;
- after a slice that ran all N instructions, it reads N + 1 (the N+1-th was counted, not run);
- after an early stop at the k-th instruction (HLT, emu_stop from a hook), it reads k.
"""
from __future__ import annotations

import ctypes
from functools import lru_cache

from unicorn import UC_ARCH_X86, UC_HOOK_INSN, UC_MODE_64, Uc
from unicorn.x86_const import UC_X86_INS_OUT, UC_X86_REG_RAX, UC_X86_REG_RBX

_SCAN_WORDS = 8192  # the counter sits ~1.3 KiB into uc_struct in 2.1.4; scan 64 KiB to be safe
# loop: inc rax; cmp rax, rbx; jne loop; out 0x80, al; hlt
_PROBE = bytes([0x48, 0xFF, 0xC0, 0x48, 0x39, 0xD8, 0x75, 0xF8, 0xE6, 0x80, 0xF4])


class CounterUnavailable(RuntimeError):
    """The Unicorn build does not expose its instruction counter the way 2.1.4 does."""


def _words(uc: Uc) -> list[int]:
    base = uc._uch.value
    return list((ctypes.c_uint64 * _SCAN_WORDS).from_address(base))


@lru_cache(maxsize=1)
def counter_offset() -> int:
    """Byte offset of `emu_counter` in the engine struct, found and checked by calibration."""
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map(0x1000, 0x1000)
    uc.mem_write(0x1000, _PROBE)
    runs = []
    for n in (1000, 777, 4321):
        uc.reg_write(UC_X86_REG_RAX, 0)
        uc.reg_write(UC_X86_REG_RBX, 1 << 40)
        uc.emu_start(0x1000, 0, count=n)
        runs.append(_words(uc))
    hits = [i for i in range(_SCAN_WORDS)
            if (runs[0][i], runs[1][i], runs[2][i]) == (1001, 778, 4322)]
    if len(hits) != 1:
        raise CounterUnavailable("cannot locate Unicorn's instruction counter (need unicorn 2.1.4)")
    offset = hits[0] * 8
    # Check the in-hook and early-stop semantics on the same engine.
    seen: list[int] = []
    uc.hook_add(UC_HOOK_INSN, lambda u, port, size, value, ud: seen.append(
        ctypes.c_uint64.from_address(u._uch.value + offset).value), None, 1, 0, UC_X86_INS_OUT)
    uc.reg_write(UC_X86_REG_RAX, 0)
    uc.reg_write(UC_X86_REG_RBX, 10)
    uc.emu_start(0x1000, 0, count=1000)
    after = ctypes.c_uint64.from_address(uc._uch.value + offset).value
    budget = ctypes.c_uint64.from_address(uc._uch.value + offset + 8).value
    if seen != [31] or after != 32 or budget != 1000:
        raise CounterUnavailable(f"Unicorn's instruction counter behaves unexpectedly ({seen}, {after})")
    return offset


class SliceCounter:
    """Live views of `uc`'s counter and its slice budget (`uc->emu_count`, the next word).

    Lowering the budget from inside a hook ends the slice at an exact instruction boundary: the
    count hook stops before the first instruction whose number exceeds it."""

    def __init__(self, uc: Uc) -> None:
        base = uc._uch.value + counter_offset()
        self.counter = ctypes.c_uint64.from_address(base)
        self.budget = ctypes.c_uint64.from_address(base + 8)

    def done_in_slice(self) -> int:
        """Instructions of the running slice completed before the current one (for hooks)."""
        return self.counter.value - 1

    def end_after_current(self, extra: int = 0) -> None:
        """End the running slice `extra` instructions after the current one."""
        want = self.counter.value + extra
        if want < self.budget.value:
            self.budget.value = want

    def executed(self) -> int:
        """Instructions the finished slice ran: a budget stop counted one it did not run; HLT did."""
        c = self.counter.value
        return c - 1 if c > self.budget.value else c
