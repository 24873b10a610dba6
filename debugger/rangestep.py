"""Where execution can leave an address range: what range stepping (GDB's `vCont;r`) hooks.

GDB steps `next`/`step` over a source line by stepping while the PC stays inside the line's
address range [start, end). Rather than stop after every instruction, the timeline runs freely
with a Python hook only where the PC can leave the range, found by decoding the range once:

- `entries`: addresses outside the range that a range instruction can lead to directly: the
  target of a direct jump, conditional jump, loop or call, and the instruction after one that
  falls through past the end. A hook there stops before the instruction runs.
- `indirect`: range instructions whose target is known only when they run (ret, iretq, jmp/call
  through a register or memory). A hook there computes the target; if it lies outside, the run
  stops right after that instruction.

Any other instruction continues inside the range or faults, so a run stops exactly where the PC
first leaves the range, at the cost of one Python call per exit-capable event, not per
instruction or block. (An interrupt handler taken meanwhile runs through, unless it reaches one
of the entry addresses itself.)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import capstone
from capstone import x86

_DISASM = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
_DISASM.detail = True
_BRANCHES = {capstone.CS_GRP_JUMP, capstone.CS_GRP_CALL, capstone.CS_GRP_RET, capstone.CS_GRP_IRET,
             capstone.CS_GRP_BRANCH_RELATIVE}
_NO_FALL_THROUGH = ("jmp", "ret", "retf", "iretq", "iret", "iretd", "ud2")  # (hlt does, once woken)


@dataclass(frozen=True)
class RangeExits:
    start: int
    end: int
    entries: frozenset[int]
    indirect: dict[int, capstone.CsInsn]

    def contains(self, addr: int) -> bool:
        return self.start <= addr < self.end


def range_exits(code: bytes, start: int, end: int) -> RangeExits:
    """Decode [start, end) (`code` holds its bytes and up to 15 more) into its ways out. Bytes
    that do not decode end the decoding: running them faults, which stops any run."""
    entries: set[int] = set()
    indirect: dict[int, capstone.CsInsn] = {}
    inside = lambda a: start <= a < end  # noqa: E731
    addr = start
    for insn in _DISASM.disasm(code, start):
        if insn.address >= end:
            break
        addr = insn.address + insn.size
        if _BRANCHES & set(insn.groups):
            ops = insn.operands
            if ops and ops[0].type == x86.X86_OP_IMM:
                if not inside(ops[0].imm):
                    entries.add(ops[0].imm)
            else:
                indirect[insn.address] = insn
        if insn.mnemonic not in _NO_FALL_THROUGH and not inside(addr):
            entries.add(addr)
    if addr < end:  # stopped decoding early: treat the undecoded byte as a way out
        entries.add(addr)
    return RangeExits(start, end, frozenset(entries), indirect)


def indirect_target(insn: capstone.CsInsn, register: Callable[[str], int], memory: Callable[[int, int], bytes]) -> int:
    """Where `insn` (an `indirect` one) goes from the current state: before it runs."""
    qword = lambda a: int.from_bytes(memory(a, 8), "little")  # noqa: E731
    if insn.mnemonic.startswith(("ret", "iret")):
        return qword(register("rsp"))
    op = insn.operands[0]
    if op.type == x86.X86_OP_REG:
        return register(insn.reg_name(op.reg))
    mem = op.mem
    addr = mem.disp
    if mem.base == x86.X86_REG_RIP:
        addr += insn.address + insn.size
    elif mem.base:
        addr += register(insn.reg_name(mem.base))
    if mem.index:
        addr += register(insn.reg_name(mem.index)) * mem.scale
    if mem.segment in (x86.X86_REG_FS, x86.X86_REG_GS):
        addr += register("fs_base" if mem.segment == x86.X86_REG_FS else "gs_base")
    return qword(addr & ((1 << 64) - 1))
