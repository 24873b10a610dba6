"""The built-in debugger: GDB's verbs over a Timeline, for users without GDB.

Addresses may be numbers (0x1234) or ELF symbols (kmain, balance+8). Bad input gets one
`error:` line; Ctrl-C stops a running continue/reverse-continue."""
from __future__ import annotations

import cmd
import shlex
import signal
import threading
from typing import Any, Callable, Optional

import capstone

from cpu.machine import GuestError
from debugger.symbols import Symbols, load_symbols, parse_number as _number

__all__ = ["Console", "load_symbols"]  # load_symbols: scripts and the manual import it from here
from debugger.timeline import Stop, Timeline
from debugger.writes import last_write_text
from replay.player import Divergence

_GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11",
         "r12", "r13", "r14", "r15", "rip", "eflags", "cs", "ss", "ds", "es", "fs", "gs")


class Console(cmd.Cmd):
    intro = "urr debugger: 'help' lists commands; reverse-stepi, reverse-continue, last-write ..."
    prompt = "(urr) "

    def __init__(self, timeline: Timeline, kernel: str, **kw: Any) -> None:  # kw: cmd.Cmd's (stdin, stdout)
        super().__init__(**kw)
        self.tl = timeline
        self.syms = Symbols(kernel)
        self.md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
        self.watches: list[tuple[int, int]] = []

    # -- helpers ------------------------------------------------------------------------------

    def say(self, text: str) -> None:
        self.stdout.write(text + "\n")

    def addr(self, text: str) -> int:
        return self.syms.address(text)

    def operands(self, arg: str, usage: str, required: int, optional: int = 0) -> list[str]:
        """The command's words, or ValueError with its usage when there are too few or many."""
        words = shlex.split(arg)
        if not required <= len(words) <= required + optional:
            raise ValueError(f"usage: {usage}")
        return words

    def where(self, addr: int) -> str:
        return self.syms.where(addr)

    def insn(self, addr: int) -> str:
        try:
            code = self.tl.read_memory(addr, 16)
        except ValueError:
            return "(not in RAM)"
        i = next(self.md.disasm(code, addr, 1), None)
        return f"{i.mnemonic} {i.op_str}".strip() if i else "(bad instruction)"

    def report(self, stop: Stop) -> None:
        ended = "" if stop.exit_status is None else f" (the guest exited with status {stop.exit_status})"
        text = {"step": "", "breakpoint": "breakpoint hit", "watchpoint": "watchpoint hit",
                "begin": "reached the start of the recording", "end": f"reached the end of the recording{ended}",
                "exited": f"guest exited with status {stop.exit_status}", "interrupt": "interrupted",
                "icount-break": "icount breakpoint", "fault": f"stopped: {stop.message}"}[stop.reason]
        if stop.watch_addr is not None:
            text += f" at {self.where(stop.watch_addr)}"
        if stop.reason == "watchpoint" and stop.message:  # a write the debugger made while recording
            text += f": {stop.message}"
        prefix = f"{text}\n" if text else ""
        self.say(f"{prefix}icount {stop.icount}  {self.where(stop.pc)}:  {self.insn(stop.pc)}")

    def run(self, action: Callable[[], Stop]) -> None:
        """Do `action` and report where it stopped; Ctrl-C (main thread only) interrupts it."""
        if threading.current_thread() is not threading.main_thread():
            self.report(action())
            return
        previous = signal.signal(signal.SIGINT, lambda *_: self.tl.interrupt())
        try:
            stop = action()
        finally:
            signal.signal(signal.SIGINT, previous)
        self.report(stop)

    def repeat(self, arg: str, usage: str, step: Callable[[], Stop]) -> None:
        """`step` N times (default 1), stopping early where it stops for another reason."""
        count = _number(*self.operands(arg, usage, 0, 1) or ["1"], "count", minimum=1)

        def steps() -> Stop:
            for _ in range(count):
                stop = step()
                if stop.reason != "step":
                    break
            return stop
        self.run(steps)

    def onecmd(self, line: str) -> bool:
        try:
            return super().onecmd(line)
        except (ValueError, GuestError, Divergence) as e:
            self.say(f"error: {e}")
            return False

    def default(self, line: str) -> bool:
        aliases = {"si": "stepi", "rsi": "reverse_stepi", "c": "continue", "rc": "reverse_continue",
                   "n": "next", "rn": "reverse_next", "b": "break", "q": "quit",
                   "reverse-stepi": "reverse_stepi", "reverse-continue": "reverse_continue",
                   "reverse-next": "reverse_next", "last-write": "last_write",
                   "step-interrupts": "step_interrupts"}
        verb, _, rest = line.partition(" ")
        if verb in aliases:
            return self.onecmd(f"{aliases[verb]} {rest}")
        self.say(f"unknown command '{verb}' (try 'help')")
        return False

    def emptyline(self) -> bool:
        return False

    def do_help(self, arg: str) -> Optional[bool]:
        """help [COMMAND]: the commands, or what one does (reverse-stepi = reverse_stepi)."""
        return super().do_help(arg.replace("-", "_"))

    # -- commands -----------------------------------------------------------------------------

    def do_stepi(self, arg: str) -> None:
        """stepi [N]: execute N instructions (default 1)."""
        self.repeat(arg, "stepi [N]", self.tl.stepi)

    def do_reverse_stepi(self, arg: str) -> None:
        """reverse-stepi [N]: go back N instructions."""
        self.repeat(arg, "reverse-stepi [N]", self.tl.reverse_stepi)

    def do_next(self, arg: str) -> None:
        """next [N]: one instruction, stepping over calls."""
        self.repeat(arg, "next [N]", self.tl.next)

    def do_reverse_next(self, arg: str) -> None:
        """reverse-next [N]: back one instruction, stepping back over calls."""
        self.repeat(arg, "reverse-next [N]", self.tl.reverse_next)

    def do_continue(self, arg: str) -> None:
        """continue: run to a breakpoint, watchpoint or the end."""
        self.operands(arg, "continue", 0)
        self.run(self.tl.cont)

    def do_reverse_continue(self, arg: str) -> None:
        """reverse-continue: run backwards to the previous breakpoint or watchpoint hit."""
        self.operands(arg, "reverse-continue", 0)
        self.run(self.tl.reverse_cont)

    def do_break(self, arg: str) -> None:
        """break ADDR|SYMBOL: stop before executing that instruction."""
        a = self.addr(*self.operands(arg, "break ADDR|SYMBOL", 1))
        self.tl.add_breakpoint(a)
        self.say(f"breakpoint at {self.where(a)}")

    def do_delete(self, arg: str) -> None:
        """delete: remove all breakpoints and watchpoints."""
        self.operands(arg, "delete", 0)
        for a in list(self.tl.breakpoints):
            self.tl.remove_breakpoint(a)
        for a, n in self.watches:
            self.tl.remove_watchpoint(a, n, "w")
        self.watches.clear()

    def _span(self, arg: str, usage: str, default: int) -> tuple[int, int]:
        """ADDR [LEN] operands."""
        words = self.operands(arg, usage, 1, 1)
        return self.addr(words[0]), _number(words[1], "length", minimum=1) if len(words) > 1 else default

    def do_watch(self, arg: str) -> None:
        """watch ADDR|SYMBOL [LEN]: stop when memory there is written (default 8 bytes)."""
        a, n = self._span(arg, "watch ADDR|SYMBOL [LEN]", 8)
        self.tl.add_watchpoint(a, n, "w")
        self.watches.append((a, n))
        self.say(f"watchpoint on {self.where(a)} ({n} bytes)")

    def do_info(self, arg: str) -> None:
        """info registers | info snapshots | info replay | info breakpoints"""
        what = arg.strip()
        if what in ("registers", "reg", "r"):
            regs = self.tl.read_registers()
            for name in _GPRS:
                self.say(f"{name:<8}{regs[name]:#018x}  {regs[name]}")
        elif what == "snapshots":
            self.stdout.write(self.tl.snapshots_text())
        elif what == "replay":
            self.say(f"icount {self.tl.icount}")
        elif what in ("breakpoints", "break"):
            for a in sorted(self.tl.breakpoints):
                self.say(f"breakpoint {self.where(a)}")
            for a, n in self.watches:
                self.say(f"watchpoint {self.where(a)} ({n} bytes)")
        else:
            self.say("usage: info registers | snapshots | replay | breakpoints")

    def do_x(self, arg: str) -> None:
        """x ADDR [LEN]: hex dump of memory (default 64 bytes)."""
        a, n = self._span(arg, "x ADDR|SYMBOL [LEN]", 64)
        data = self.tl.read_memory(a, n)
        for off in range(0, len(data), 16):
            row = data[off:off + 16]
            self.say(f"{a + off:#014x}: {row.hex(' ')}")

    def do_disas(self, arg: str) -> None:
        """disas [ADDR] [N]: disassemble N instructions (default: 5 at the current one)."""
        words = self.operands(arg, "disas [ADDR|SYMBOL] [N]", 0, 2)
        a = self.addr(words[0]) if words else self.tl.pc()
        n = _number(words[1], "count", minimum=1) if len(words) > 1 else 5
        code = self.tl.read_memory(a, 16 * n)
        for i, ins in zip(range(n), self.md.disasm(code, a)):
            mark = "=>" if ins.address == self.tl.pc() else "  "
            self.say(f"{mark} {self.where(ins.address)}:  {ins.mnemonic} {ins.op_str}")

    def do_goto(self, arg: str) -> None:
        """goto ICOUNT: go to that instruction count (backwards or forwards)."""
        icount = _number(*self.operands(arg, "goto ICOUNT", 1), "icount")
        self.run(lambda: self.tl.seek(icount))

    def do_last_write(self, arg: str) -> None:
        """last-write ADDR|SYMBOL [LEN]: when was this memory last written before now? (LEN 8)"""
        a, n = self._span(arg, "last-write ADDR|SYMBOL [LEN]", 8)
        self.say(last_write_text(self.tl.last_write(a, n), self.where(a), lambda rip: f"{self.where(rip)}: {self.insn(rip)}"))

    def do_step_interrupts(self, arg: str) -> None:
        """step-interrupts [on|off]: whether steps stop in interrupt handlers (default off: a
        step during which the guest takes an interrupt goes on through the handler)."""
        words = self.operands(arg, "step-interrupts [on|off]", 0, 1)
        if words:
            if words[0] not in ("on", "off"):
                raise ValueError("usage: step-interrupts [on|off]")
            self.tl.step_into_interrupts = words[0] == "on"
        self.stdout.write(self.tl.interrupt_steps.text())

    def do_savevm(self, arg: str) -> None:
        """savevm NAME: take a named snapshot here (load it later with -loadvm NAME)."""
        name = self.operands(arg, "savevm NAME", 1)[0]
        if self.tl.snapshots is None:
            self.say("error: savevm needs a replay or recording with a snapshot catalog")
            return
        info = self.tl.snapshots.take(name, "named")
        self.say(f"snapshot {info.name} at icount {info.icount}")

    def do_branch(self, arg: str) -> None:
        """branch [-f] NEWFILE: leave the replay here, record from here into NEWFILE (-f: replace it)."""
        words = self.operands(arg, "branch [-f] NEWFILE", 1, 1)
        if len(words) == 2 and words[0] != "-f":
            raise ValueError("usage: branch [-f] NEWFILE")
        self.say(self.tl.branch(words[-1], overwrite=len(words) == 2))

    def do_quit(self, arg: str) -> Optional[bool]:
        """quit: leave the debugger."""
        return True

    do_EOF = do_quit
