"""The agent-expression interpreter: GDB's bytecode semantics, and refusal of malformed code."""
from __future__ import annotations

import random

import pytest

from debugger.agentexpr import OPS, STACK_LIMIT, AgentExpr, AgentExprError, parse_conditions

CODES = {op.name: code for code, op in OPS.items()}
REGS = {0: 0x1111, 2: 0xFFFF_FFFF_FFFF_FFF9, 17: 0x246}  # rax, rcx (-7), eflags
MEMORY = bytes(range(256))


def bits(n: int) -> int | None:
    return {0: 64, 2: 64, 17: 32, 24: 80}.get(n)


def asm(*items: object) -> bytes:
    """Opcode names, each followed by its operand as an int when it has one."""
    out, it = bytearray(), iter(items)
    for name in it:
        op = OPS[CODES[name]]
        out.append(CODES[name])
        if op.operand:
            out += int(next(it)).to_bytes(op.operand, "big")
    return bytes(out)


def memory(addr: int, size: int) -> bytes:
    if addr + size > len(MEMORY):
        raise ValueError("outside memory")
    return MEMORY[addr:addr + size]


def run(*items: object) -> int:
    return AgentExpr(asm(*items), bits).evaluate(REGS.__getitem__, memory)


def signed(v: int) -> int:
    return v - (1 << 64) if v >> 63 else v


def test_opcode_numbers_are_gdbs():
    """A few from the manual's table, to catch a shifted table."""
    assert (CODES["add"], CODES["equal"], CODES["ext"], CODES["ref8"], CODES["if_goto"], CODES["const8"],
            CODES["reg"], CODES["end"], CODES["zero_ext"], CODES["pick"], CODES["rot"]) == (
        0x02, 0x13, 0x16, 0x17, 0x20, 0x22, 0x26, 0x27, 0x2A, 0x32, 0x33)


@pytest.mark.parametrize("op, a, b, expected", [
    ("add", 5, 7, 12), ("sub", 5, 7, -2), ("mul", -3, 7, -21),
    ("div_signed", -7, 2, -3), ("div_signed", 7, -2, -3), ("div_unsigned", 7, 2, 3),
    ("rem_signed", -7, 2, -1), ("rem_signed", 7, -2, 1), ("rem_unsigned", 7, 4, 3),
    ("lsh", 1, 63, -(1 << 63)), ("lsh", 1, 64, 0), ("rsh_signed", -8, 1, -4), ("rsh_unsigned", -8, 60, 15),
    ("bit_and", 12, 10, 8), ("bit_or", 12, 10, 14), ("bit_xor", 12, 10, 6),
    ("equal", 3, 3, 1), ("equal", 3, 4, 0), ("less_signed", -1, 0, 1), ("less_unsigned", -1, 0, 0),
])
def test_binary_operators_follow_c_on_64_bit_values(op, a, b, expected):
    value = run("const64", a & ((1 << 64) - 1), "const64", b & ((1 << 64) - 1), op, "end")
    assert signed(value) == expected


def test_registers_memory_extension_and_stack_operators():
    assert signed(run("reg", 2, "end")) == -7
    assert run("reg", 17, "end") == 0x246
    assert run("const8", 0x10, "ref8", "end") == 0x10
    assert run("const8", 0x10, "ref32", "end") == 0x13121110  # little-endian
    assert run("const8", 0x10, "ref64", "end") == 0x1716151413121110
    assert signed(run("const8", 0xF0, "ext", 8, "end")) == -16
    assert run("const16", 0x1F0, "ext", 8, "end") == 0xFFFF_FFFF_FFFF_FFF0  # only the low 8 bits count
    assert run("const16", 0x1F0, "zero_ext", 8, "end") == 0xF0
    assert run("const8", 0, "log_not", "end") == 1 and run("const8", 9, "log_not", "end") == 0
    assert signed(run("const8", 0, "bit_not", "end")) == -1
    assert run("const8", 1, "const8", 2, "swap", "sub", "end") == 1
    assert run("const8", 1, "const8", 2, "const8", 3, "pick", 2, "end") == 1
    assert run("const8", 5, "dup", "add", "end") == 10
    assert run("const8", 5, "const8", 6, "pop", "end") == 5
    # rot: a b c => c a b, so the top is b
    assert run("const8", 1, "const8", 2, "const8", 3, "rot", "end") == 2
    assert run("const8", 1, "const8", 2, "const8", 3, "rot", "pop", "end") == 1
    assert run("const8", 1, "const8", 2, "const8", 3, "rot", "pop", "pop", "end") == 3


def test_conditional_and_unconditional_jumps():
    # (rcx == -7) ? 100 : 200, as GDB compiles ?: -- if_goto over the else branch
    def choose(reg: int) -> int:
        code = asm("reg", reg, "const64", (1 << 64) - 7, "equal", "if_goto", 21, "const8", 200, "goto", 23,
                   "const8", 100, "end")
        return AgentExpr(code, bits).evaluate(REGS.__getitem__, memory)
    assert choose(2) == 100 and choose(0) == 200


def test_evaluation_errors():
    with pytest.raises(AgentExprError, match="division by zero"):
        run("const8", 1, "const8", 0, "div_signed", "end")
    with pytest.raises(AgentExprError, match="cannot read"):
        run("const16", 0x1000, "ref8", "end")


@pytest.mark.parametrize("code, message", [
    (b"", "empty"),
    (bytes([0x00, 0x27]), "unknown opcode"),
    (bytes([0x01, 0x27]), "float"),
    (bytes([0x2C, 0x00, 0x01, 0x27]), "getv"),
    (bytes([0x24, 0x01, 0x02]), "cut off"),
    (asm("const8", 1), "leads to 2"),  # falls off the end: no `end`
    (asm("add", "end"), "underflow"),
    (asm("end"), "empty stack"),
    (asm("const8", 1, "pick", 1, "end"), "underflow"),
    (asm("const8", 1, "goto", 0), "backwards"),
    (asm("const8", 1, "goto", 2, "end"), "backwards"),  # onto itself
    (asm("const8", 1, "if_goto", 9, "const8", 2, "end"), "leads to 9"),  # past the end
    (asm("const16", 1, "if_goto", 5, "end", "end"), "leads to 5"),  # into goto's own operand
    (asm("const8", 1, "const8", 1, "if_goto", 9, "const8", 2, "end"), "differ"),
    (asm("ext", 0, "end"), "ext 0"),
    (asm("reg", 5, "end"), "no such register"),
    (asm("reg", 24, "end"), "80-bit"),
    (asm(*[x for _ in range(STACK_LIMIT + 1) for x in ("const8", 1)], "end"), "deeper"),
])
def test_malformed_expressions_are_refused_with_the_reason(code, message):
    with pytest.raises(AgentExprError, match=message):
        AgentExpr(code, bits)


def test_unreachable_code_is_not_held_against_an_expression():
    assert run("const8", 7, "goto", 6, "add", "end") == 7


def test_random_code_never_escapes_as_anything_but_agent_expr_errors():
    """Random opcode sequences with random operands (and some raw bytes): parsing refuses or
    accepts, and what it accepts evaluates to an int or fails with AgentExprError."""
    rng = random.Random(1)
    names = list(CODES)
    accepted = 0
    for _ in range(20000):
        code = bytearray()
        for _ in range(rng.randrange(1, 10)):
            if rng.random() < 0.05:
                code.append(rng.randrange(256))
                continue
            op = OPS[CODES[rng.choice(names)]]
            code.append(CODES[op.name])
            code += rng.randrange(min(256, 1 << 8 * op.operand) if rng.random() < 0.7 else 1 << 8 * op.operand
                                  ).to_bytes(op.operand, "big")
        if rng.random() < 0.8:
            code.append(CODES["end"])
        try:
            expr = AgentExpr(bytes(code), bits)
        except AgentExprError:
            continue
        accepted += 1
        try:
            assert isinstance(expr.evaluate(lambda n: REGS.get(n, 0), memory), int)
        except AgentExprError:
            pass
    assert accepted > 300  # the generator does produce valid code too (393 with this seed)


def test_parse_conditions_reads_gdbs_cond_list():
    exprs = parse_conditions("X7,26000222051327;X3,220127", bits)
    assert [e.code for e in exprs] == [bytes.fromhex("26000222051327"), bytes.fromhex("220127")]
    assert exprs[0].evaluate(REGS.__getitem__, memory) == 0 and exprs[1].evaluate(REGS.__getitem__, memory) == 1
    for bad in ("X2,0a", "Y3,220127", "X3,220127;", "X3,2201zz", "Xq,00"):
        with pytest.raises(AgentExprError):
            parse_conditions(bad, bits)
