"""The built-in debugger console (`urr ... -debugger`) on real replays: what each verb prints,
checked against the Timeline underneath, the ELF and a straight replay; bad input is one line."""
from __future__ import annotations

import io
import re
from typing import Iterator

import pytest

from debugger.console import Console
from debugger.timeline import Timeline
from tests.conftest import run_urr
from tests.replays import Recording, recorded  # noqa: F401  (recorded is a fixture)


class Driver:
    """A Console over a replay, fed one command at a time; `do` returns what it printed."""

    def __init__(self, rec: Recording) -> None:
        self.rec = rec
        self.tl = Timeline.for_replay(rec.rrfile, rec.kernel, snapshot="init")
        self.out = io.StringIO()
        self.console = Console(self.tl, rec.kernel, stdin=io.StringIO(), stdout=self.out)

    def do(self, line: str) -> str:
        self.out.seek(0)
        self.out.truncate()
        assert not self.console.onecmd(line)
        return self.out.getvalue()

    def where(self, function: str, addr: int) -> str:
        """How the console shows an address inside a function."""
        return f"{addr:#x} <{function}+{addr - self.rec.elf.addr(function)}>"

    def position(self) -> str:
        """The last line of a stop report for the timeline's position, computed from the ELF."""
        pc = self.tl.pc()
        function = self.rec.elf.function_at(pc)
        insn = next(i for i in self.rec.elf.code(function) if i.address == pc)
        return f"icount {self.tl.icount}  {self.where(function, pc)}:  {insn.mnemonic} {insn.op_str}".rstrip()


@pytest.fixture
def console(recorded) -> Iterator:  # noqa: F811
    drivers: list[Driver] = []

    def make(name: str) -> Driver:
        drivers.append(Driver(recorded(name)))
        return drivers[-1]
    yield make
    for d in drivers:
        d.tl.close()


def test_break_continue_and_stepping(console):
    c = console("corrupt")
    transfer = c.rec.elf.addr("transfer")
    assert c.do("break transfer") == f"breakpoint at {c.where('transfer', transfer)}\n"
    assert c.do("continue") == f"breakpoint hit\n{c.position()}\n" and c.tl.pc() == transfer
    first = c.tl.icount
    code = [i.address for i in c.rec.elf.code("transfer")]
    assert c.do("stepi") == f"{c.position()}\n" and (c.tl.icount, c.tl.pc()) == (first + 1, code[1])
    assert c.do("stepi 3") == f"{c.position()}\n" and c.tl.icount == first + 4
    assert c.do("reverse-stepi") == f"{c.position()}\n" and c.tl.icount == first + 3
    assert c.do("rsi 3") == f"{c.position()}\n" and (c.tl.icount, c.tl.pc()) == (first, transfer)
    assert c.do("c") == f"breakpoint hit\n{c.position()}\n" and c.tl.icount > first
    assert c.do("reverse-continue") == f"breakpoint hit\n{c.position()}\n" and c.tl.icount == first
    assert c.do("info replay") == f"icount {first}\n"
    assert c.do("info breakpoints") == f"breakpoint {c.where('transfer', transfer)}\n"
    c.do("delete")
    assert c.do("info breakpoints") == ""
    assert c.do("reverse-continue") == f"reached the start of the recording\n{c.position()}\n"
    assert c.tl.icount == 0 and c.tl.pc() == c.rec.elf.entry


def test_next_and_reverse_next_step_over_a_call(console):
    c = console("hello")
    (call,) = c.rec.elf.calls("kmain", "debugcon_puts")
    c.do(f"break {call.address:#x}")
    c.do("continue")
    at_call = c.tl.icount
    assert c.do("next") == f"{c.position()}\n" and c.tl.pc() == call.address + call.size
    assert c.tl.icount > at_call + 2
    assert c.do("reverse-next") == f"{c.position()}\n" and (c.tl.icount, c.tl.pc()) == (at_call, call.address)


def test_registers_memory_and_disassembly(console):
    c = console("corrupt")
    c.do("goto 1000000")
    regs = c.tl.read_registers()
    shown = dict(re.findall(r"^(\w+) +0x[0-9a-f]{16}  (\d+)$", c.do("info registers"), re.M))
    assert {name: int(v) for name, v in shown.items()} == {name: regs[name] for name in shown}
    assert {"rax", "r15", "rip", "rsp", "eflags", "cs", "gs"} <= set(shown)
    victim = c.rec.elf.addr("accounts")
    data = c.tl.read_memory(victim, 24)
    assert c.do("x accounts 24") == f"{victim:#014x}: {data[:16].hex(' ')}\n{victim + 16:#014x}: {data[16:].hex(' ')}\n"
    assert c.do("x accounts+16 8") == f"{victim + 16:#014x}: {data[16:].hex(' ')}\n"
    pc = c.tl.pc()
    function = c.rec.elf.function_at(pc)
    code = c.rec.elf.code(function)
    here = next(n for n, i in enumerate(code) if i.address == pc)
    lines = c.do("disas").splitlines()
    assert lines[0] == f"=> {c.where(function, pc)}:  {code[here].mnemonic} {code[here].op_str}"
    assert len(lines) == 5 and all(line.startswith("   0x") for line in lines[1:])
    assert c.do(f"disas {function} 2").splitlines()[1].endswith(f"{code[1].mnemonic} {code[1].op_str}")


def test_goto_matches_a_straight_replay(console):
    c = console("ticks")
    targets = [c.rec.icount // 2, c.rec.icount // 5, c.rec.icount - 1]
    expected = c.rec.straight_states(targets)
    for n in targets:  # ticks is often in its interrupt stubs, which are not functions
        reply = c.do(f"goto {n}")
        assert (c.tl.icount, c.tl.session.state_hash()) == expected[n]
        assert re.fullmatch(rf"icount {c.tl.icount}  {c.tl.pc():#x} <\w+\+\d+>:  \w.*\n", reply), reply
    reply = c.do(f"goto {c.rec.icount + 5}")
    assert reply.startswith(f"reached the end of the recording (the guest exited with status {c.rec.status})\n"
                            f"icount {c.rec.icount}  {c.tl.pc():#x} <"), reply


def test_watch_and_last_write_find_the_corrupting_store(console):
    """The corrupt guest's bug with the console: at report_corruption, last-write total_checks
    names journal_append's store; a watch and reverse-continue stop on the same instruction."""
    c = console("corrupt")
    victim = c.rec.elf.addr("total_checks")
    c.do("break report_corruption")
    c.do("continue")
    here = c.tl.icount
    report = c.do("last-write total_checks")
    m = re.fullmatch(r"last write to (.*): icount (\d+) at (.*): (.*)\n  old ([0-9a-f ]+)  \(= (0x[0-9a-f]+)\)\n"
                     r"  new ([0-9a-f ]+)  \(= (0x[0-9a-f]+)\)\n", report)
    assert m, report
    assert m.group(1) == c.where("total_checks", victim) and c.tl.icount == here
    icount = int(m.group(2))
    assert c.do("watch total_checks") == f"watchpoint on {c.where('total_checks', victim)} (8 bytes)\n"
    assert c.do("reverse-continue") == f"watchpoint hit at {c.where('total_checks', victim)}\n{c.position()}\n"
    assert c.tl.icount == icount and m.group(3) == c.where("journal_append", c.tl.pc())
    assert f"{c.position()}\n".endswith(f":  {m.group(4)}\n")
    old = c.tl.read_memory(victim, 8)
    c.do("stepi")
    new = c.tl.read_memory(victim, 8)
    assert (m.group(5), m.group(7)) == (old.hex(" "), new.hex(" "))
    assert (int(m.group(6), 16), int(m.group(8), 16)) == (int.from_bytes(old, "little"), int.from_bytes(new, "little"))
    assert c.do("last-write kmain 4") == f"no write to {c.where('kmain', c.rec.elf.addr('kmain'))} since the start of the recording\n"


def test_help_takes_the_dashed_names(console):
    c = console("hello")
    assert c.do("help reverse-stepi") == Console.do_reverse_stepi.__doc__ + "\n"
    assert "last_write" in c.do("help")


def test_snapshots(console):
    c = console("hello")
    c.do("goto 5000")
    assert c.do("savevm here") == "snapshot here at icount 5000\n"
    listing = c.do("info snapshots")
    assert re.match(r"\d+ snapshots; position icount 5000\n", listing)
    names = re.findall(r"^  (\S+) +icount +(\d+) ", listing, re.M)
    assert ("init", "0") in names and ("here", "5000") in names


@pytest.mark.parametrize("line, reply", [
    ("frobnicate", "unknown command 'frobnicate' (try 'help')"),
    ("break nowhere", "error: unknown address or symbol 'nowhere'"),
    ("break kmain+zz", "error: bad offset 'zz'"),
    ("break", "error: usage: break ADDR|SYMBOL"),
    ("watch", "error: usage: watch ADDR|SYMBOL [LEN]"),
    ("watch kmain 0", "error: bad length '0'"),
    ("x", "error: usage: x ADDR|SYMBOL [LEN]"),
    ("x 0x7fffffff 4", "error: memory 0x7fffffff+4 is outside RAM"),
    ("disas 0x7fffffff", "error: memory 0x7fffffff+80 is outside RAM"),
    ("last-write", "error: usage: last-write ADDR|SYMBOL [LEN]"),
    ("stepi 0", "error: bad count '0'"),
    ("reverse-stepi abc", "error: bad count 'abc'"),
    ("next 1 2", "error: usage: next [N]"),
    ("goto", "error: usage: goto ICOUNT"),
    ("goto zz", "error: bad icount 'zz'"),
    ("continue now", "error: usage: continue"),
    ("savevm", "error: usage: savevm NAME"),
    ("x 'kmain", "error: No closing quotation"),
    ("info", "usage: info registers | snapshots | replay | breakpoints"),
])
def test_bad_input_is_one_line(console, line, reply):
    c = console("hello")
    assert c.do(line) == f"{reply}\n"
    assert c.tl.icount == 0


def test_cli_debugger_with_piped_commands(recorded):  # noqa: F811
    rec = recorded("corrupt")
    commands = b"break report_corruption\ncontinue\nlast-write total_checks\nx\nwatch\nquit\n"
    r = run_urr(*rec.urr_args(), "-serial", "none", "-debugger", stdin=commands)
    out = r.out.decode()
    assert r.status == 0 and r.err == "", r.err
    assert out.startswith(Console.intro)
    assert re.search(r"last write to 0x[0-9a-f]+ <total_checks\+0>: icount \d+ at 0x[0-9a-f]+ <journal_append\+\d+>:",
                     out), out
    assert "error: usage: x ADDR|SYMBOL [LEN]" in out and "error: usage: watch ADDR|SYMBOL [LEN]" in out


def test_cli_debugger_in_record_mode(recorded, tmp_path):  # noqa: F811
    """Recording under the console: forward works, reverse is refused, the recording replays."""
    rec = recorded("hello")
    rrfile = str(tmp_path / "console.rr")
    r = run_urr("-kernel", rec.kernel, "-serial", "none", "-icount", f"shift=7,rr=record,rrfile={rrfile}",
                "-debugger", stdin=b"stepi\nreverse-stepi\ncontinue\n")
    out = r.out.decode()
    assert "error: reverse execution needs a replay (rr=replay) with a snapshot catalog" in out, out
    assert f"guest exited with status {rec.status}\nicount {rec.icount} " in out, out
    assert r.status == rec.status
    replay = run_urr("-kernel", rec.kernel, "-serial", "none", "-icount", f"shift=7,rr=replay,rrfile={rrfile}")
    assert replay.status == rec.status and f"replayed {rec.icount} instructions" in replay.note("replayed")


def test_step_interrupts_switch(console):
    """step-interrupts on|off switches the timeline's handling of interrupts during steps."""
    c = console("hello")
    assert c.do("step-interrupts") == "steps go on through interrupt handlers (step_interrupts off)\n"
    assert c.do("step-interrupts on") == "steps stop in interrupt handlers (step_interrupts on)\n"
    assert c.tl.step_into_interrupts
    assert c.do("step-interrupts off").endswith("(step_interrupts off)\n") and not c.tl.step_into_interrupts
    assert c.do("step-interrupts maybe") == "error: usage: step-interrupts [on|off]\n"
