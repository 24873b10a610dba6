"""GDB agent expressions: the bytecode GDB sends with a breakpoint's condition (`Z0,addr,kind;X..`).

GDB compiles a condition such as `call == 10000` into a small stack machine's code (GDB manual,
appendix "The GDB Agent Expression Mechanism"), so that the target can evaluate it where the
breakpoint is hit and report only hits where it is true. Values are 64-bit integers; constants,
jump offsets and register numbers in the code are big-endian; memory is read little-endian.

An expression is checked whole when it is parsed, before it is ever run: every opcode known and
supported (no floating point, tracing or trace-state variables: GDB uses none of them in
conditions), operands complete, jumps forward onto instruction boundaries (so evaluation always
ends), the stack never below empty or above STACK_LIMIT on any path, equally deep wherever paths
join, one value left at `end`, registers that exist and fit 64 bits. A malformed expression is
refused with AgentExprError at insertion; at a hit, only division by zero or unreadable memory
can fail, and the caller decides what that means (the stub stops, so the user sees it).

    expr = AgentExpr(bytes.fromhex("2600052200130027"), register_bits)  # $rdi == 0
    expr.evaluate(read_register, read_memory)   # -> int, non-zero: true
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

MASK = (1 << 64) - 1
STACK_LIMIT = 100  # gdbserver's own limit; GDB's conditions need a handful


class AgentExprError(ValueError):
    """A malformed expression (at parse time) or an evaluation that cannot complete."""


@dataclass(frozen=True)
class _Op:
    name: str
    operand: int  # bytes of operand after the opcode
    pops: int
    pushes: int


# The opcodes a condition can use: opcode -> (name, operand bytes, pops, pushes).
OPS: dict[int, _Op] = {code: _Op(*spec) for code, spec in {
    0x02: ("add", 0, 2, 1), 0x03: ("sub", 0, 2, 1), 0x04: ("mul", 0, 2, 1),
    0x05: ("div_signed", 0, 2, 1), 0x06: ("div_unsigned", 0, 2, 1),
    0x07: ("rem_signed", 0, 2, 1), 0x08: ("rem_unsigned", 0, 2, 1),
    0x09: ("lsh", 0, 2, 1), 0x0A: ("rsh_signed", 0, 2, 1), 0x0B: ("rsh_unsigned", 0, 2, 1),
    0x0E: ("log_not", 0, 1, 1), 0x0F: ("bit_and", 0, 2, 1), 0x10: ("bit_or", 0, 2, 1),
    0x11: ("bit_xor", 0, 2, 1), 0x12: ("bit_not", 0, 1, 1), 0x13: ("equal", 0, 2, 1),
    0x14: ("less_signed", 0, 2, 1), 0x15: ("less_unsigned", 0, 2, 1), 0x16: ("ext", 1, 1, 1),
    0x17: ("ref8", 0, 1, 1), 0x18: ("ref16", 0, 1, 1), 0x19: ("ref32", 0, 1, 1), 0x1A: ("ref64", 0, 1, 1),
    0x20: ("if_goto", 2, 1, 0), 0x21: ("goto", 2, 0, 0),
    0x22: ("const8", 1, 0, 1), 0x23: ("const16", 2, 0, 1), 0x24: ("const32", 4, 0, 1), 0x25: ("const64", 8, 0, 1),
    0x26: ("reg", 2, 0, 1), 0x27: ("end", 0, 0, 0), 0x28: ("dup", 0, 1, 2), 0x29: ("pop", 0, 1, 0),
    0x2A: ("zero_ext", 1, 1, 1), 0x2B: ("swap", 0, 2, 2), 0x32: ("pick", 1, 0, 1), 0x33: ("rot", 0, 3, 3),
}.items()}
# Defined by GDB but refused here: floating point, tracing, trace state variables, printf.
UNSUPPORTED = {0x01: "float", 0x0C: "trace", 0x0D: "trace_quick", 0x1B: "ref_float", 0x1C: "ref_double",
               0x1D: "ref_long_double", 0x1E: "l_to_d", 0x1F: "d_to_l", 0x2C: "getv", 0x2D: "setv",
               0x2E: "tracev", 0x2F: "tracenz", 0x30: "trace16", 0x34: "printf"}


def _signed(v: int) -> int:
    return v - (1 << 64) if v >> 63 else v


def _trunc_div(a: int, b: int) -> int:
    """C's division of signed values: the quotient rounded towards zero."""
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def _binary(name: str, a: int, b: int) -> int:
    """a OP b on unsigned 64-bit values (b was on top of the stack)."""
    if name in ("div_signed", "div_unsigned", "rem_signed", "rem_unsigned") and b == 0:
        raise AgentExprError("division by zero")
    if name == "add":
        return a + b
    if name == "sub":
        return a - b
    if name == "mul":
        return a * b
    if name == "div_signed":
        return _trunc_div(_signed(a), _signed(b))
    if name == "div_unsigned":
        return a // b
    if name == "rem_signed":
        sa, sb = _signed(a), _signed(b)
        return sa - sb * _trunc_div(sa, sb)
    if name == "rem_unsigned":
        return a % b
    if name == "lsh":
        return a << b if b < 64 else 0
    if name == "rsh_signed":
        return _signed(a) >> min(b, 63)
    if name == "rsh_unsigned":
        return a >> b if b < 64 else 0
    if name == "bit_and":
        return a & b
    if name == "bit_or":
        return a | b
    if name == "bit_xor":
        return a ^ b
    if name == "equal":
        return int(a == b)
    if name == "less_signed":
        return int(_signed(a) < _signed(b))
    assert name == "less_unsigned"
    return int(a < b)


@dataclass(frozen=True)
class _Insn:
    offset: int
    op: _Op
    operand: int  # the decoded operand (0 if none)
    next: int  # offset of the following instruction


class AgentExpr:
    """One checked expression; `register_bits` gives each register number's width (None: no such
    register), so that `reg` operands are checked at parse time too."""

    def __init__(self, code: bytes, register_bits: Callable[[int], int | None]) -> None:
        if not code:
            raise AgentExprError("empty expression")
        self.code = bytes(code)
        self.insns = self._decode(register_bits)
        self._check_stack()

    def _decode(self, register_bits: Callable[[int], int | None]) -> dict[int, _Insn]:
        insns: dict[int, _Insn] = {}
        pc = 0
        while pc < len(self.code):
            opcode = self.code[pc]
            if opcode in UNSUPPORTED:
                raise AgentExprError(f"opcode {UNSUPPORTED[opcode]} ({opcode:#04x}) at {pc} is not supported")
            op = OPS.get(opcode)
            if op is None:
                raise AgentExprError(f"unknown opcode {opcode:#04x} at {pc}")
            end = pc + 1 + op.operand
            if end > len(self.code):
                raise AgentExprError(f"{op.name} at {pc}: operand cut off")
            operand = int.from_bytes(self.code[pc + 1:end], "big")
            if op.name in ("ext", "zero_ext") and operand == 0:
                raise AgentExprError(f"{op.name} 0 at {pc}")
            if op.name == "reg":
                bits = register_bits(operand)
                if bits is None:
                    raise AgentExprError(f"reg {operand} at {pc}: no such register")
                if bits > 64:
                    raise AgentExprError(f"reg {operand} at {pc}: {bits}-bit registers are not supported")
            if op.name in ("goto", "if_goto") and operand <= pc:
                raise AgentExprError(f"{op.name} at {pc} jumps backwards (to {operand})")
            insns[pc] = _Insn(pc, op, operand, end)
            pc = end
        return insns

    def _check_stack(self) -> None:
        """Every path from the start: depth never negative or over the limit, the same at joins,
        ending at `end` with a value. Jumps go forward only, so one pass in order suffices."""
        depth_at: dict[int, int] = {0: 0}
        for pc, insn in sorted(self.insns.items()):
            if pc not in depth_at:
                continue  # unreachable
            depth, op = depth_at[pc], insn.op
            need = insn.operand + 1 if op.name == "pick" else op.pops
            if depth < need:
                raise AgentExprError(f"{op.name} at {pc}: stack underflow")
            if op.name == "end":
                if depth < 1:
                    raise AgentExprError(f"end at {pc} with an empty stack")
                continue
            depth += op.pushes - op.pops
            if depth > STACK_LIMIT:
                raise AgentExprError(f"{op.name} at {pc}: stack deeper than {STACK_LIMIT}")
            targets = []
            if op.name in ("goto", "if_goto"):
                targets.append(insn.operand)
            if op.name != "goto":
                targets.append(insn.next)
            for target in targets:
                if target not in self.insns:
                    raise AgentExprError(f"{op.name} at {pc} leads to {target}, not an instruction")
                if depth_at.setdefault(target, depth) != depth:
                    raise AgentExprError(f"stack depths differ where paths join at {target}")

    def evaluate(self, register: Callable[[int], int], memory: Callable[[int, int], bytes]) -> int:
        """The expression's value; AgentExprError for division by zero or memory `memory` cannot
        read (it raises ValueError)."""
        stack: list[int] = []
        pc = 0
        insns = self.insns
        while True:
            insn = insns[pc]
            name = insn.op.name
            pc = insn.next
            if name == "end":
                return stack[-1]
            if name.startswith("const"):
                stack.append(insn.operand)
            elif name == "reg":
                stack.append(register(insn.operand) & MASK)
            elif name.startswith("ref"):
                size = int(name[3:]) // 8
                addr = stack.pop()
                try:
                    data = memory(addr, size)
                except ValueError as e:
                    raise AgentExprError(f"cannot read {size} bytes at {addr:#x}: {e}") from None
                stack.append(int.from_bytes(data, "little"))
            elif name == "if_goto":
                if stack.pop():
                    pc = insn.operand
            elif name == "goto":
                pc = insn.operand
            elif name == "ext":
                bits = insn.operand
                if bits < 64:
                    v = stack[-1] & ((1 << bits) - 1)
                    stack[-1] = (v - (1 << bits) if v >> (bits - 1) else v) & MASK
            elif name == "zero_ext":
                if insn.operand < 64:
                    stack[-1] &= (1 << insn.operand) - 1
            elif name == "log_not":
                stack[-1] = int(stack[-1] == 0)
            elif name == "bit_not":
                stack[-1] ^= MASK
            elif name == "dup":
                stack.append(stack[-1])
            elif name == "pop":
                stack.pop()
            elif name == "swap":
                stack[-1], stack[-2] = stack[-2], stack[-1]
            elif name == "pick":
                stack.append(stack[-1 - insn.operand])
            elif name == "rot":  # a b c => c a b
                a, b, c = stack[-3:]
                stack[-3:] = [c, a, b]
            else:
                b = stack.pop()
                stack[-1] = _binary(name, stack[-1], b) & MASK


def parse_conditions(text: str, register_bits: Callable[[int], int | None]) -> list[AgentExpr]:
    """The cond_list of a Z0/Z1 packet, `X<len>,<hex bytecode>` items separated by ';'."""
    exprs = []
    for item in text.split(";"):
        if not item.startswith("X") or "," not in item:
            raise AgentExprError(f"bad condition {item[:32]!r}: expected X<len>,<bytecode>")
        length, hexcode = item[1:].split(",", 1)
        try:
            code = bytes.fromhex(hexcode)
            size = int(length, 16)
        except ValueError:
            raise AgentExprError(f"bad condition {item[:32]!r}: not hex") from None
        if size != len(code):
            raise AgentExprError(f"condition says {size} bytes, has {len(code)}")
        exprs.append(AgentExpr(code, register_bits))
    return exprs


class Condition:
    """A breakpoint's target-side condition: true when any of its expressions is non-zero, or
    cannot be evaluated (GDB evaluates it again at the stop and resumes if it is false).

    `registers` names, per GDB register number, the machine register it reads and how many of
    its low bits (bits, masked). Plain data, so that it can be pickled: a reverse search fanned
    out to worker processes evaluates it there against each worker's own machine
    (debugger.fanout)."""

    def __init__(self, exprs: list[AgentExpr], registers: list[tuple[str, int, bool]]) -> None:
        self.exprs = exprs
        self.registers = registers

    def holds(self, read_register: Callable[[str], int], read_memory: Callable[[int, int], bytes]) -> bool:
        def register(number: int) -> int:
            name, bits, masked = self.registers[number]
            value = read_register(name)
            return value & ((1 << bits) - 1) if masked else value

        for expr in self.exprs:
            try:
                if expr.evaluate(register, read_memory) != 0:
                    return True
            except AgentExprError:
                return True
        return False


@dataclass(frozen=True)
class BoundCondition:
    """A Condition evaluated with a timeline's readers: what the timeline calls at each hit.
    `condition` is the part that travels to other processes."""
    condition: Condition
    read_register: Callable[[str], int]
    read_memory: Callable[[int, int], bytes]

    def __call__(self) -> bool:
        return self.condition.holds(self.read_register, self.read_memory)
