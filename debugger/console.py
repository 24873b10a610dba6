"""The built-in debugger: GDB's verbs over a Timeline, for users without GDB.

Addresses may be numbers (0x1234) or ELF symbols (kmain, balance+8)."""
from __future__ import annotations

import cmd
import shlex
from typing import Optional

import capstone
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from debugger.timeline import Stop, Timeline

_GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11",
         "r12", "r13", "r14", "r15", "rip", "eflags", "cs", "ss", "ds", "es", "fs", "gs")


def load_symbols(path: str) -> dict[str, int]:
    """Function and object symbols of the guest ELF (empty if it has none)."""
    out: dict[str, int] = {}
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            for sec in elf.iter_sections():
                if isinstance(sec, SymbolTableSection):
                    for sym in sec.iter_symbols():
                        if sym.name and sym["st_info"]["type"] in ("STT_FUNC", "STT_OBJECT", "STT_NOTYPE"):
                            out.setdefault(sym.name, sym["st_value"])
    except (OSError, ValueError):
        pass
    return out


class Console(cmd.Cmd):
    intro = "urr debugger: 'help' lists commands; reverse-stepi, reverse-continue, last-write ..."
    prompt = "(urr) "

    def __init__(self, timeline: Timeline, kernel: str, **kw) -> None:
        super().__init__(**kw)
        self.tl = timeline
        self.symbols = load_symbols(kernel)
        self.by_addr = {v: k for k, v in sorted(self.symbols.items(), reverse=True)}
        self.md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
        self.watches: list[tuple[int, int]] = []

    # -- helpers ------------------------------------------------------------------------------

    def say(self, text: str) -> None:
        self.stdout.write(text + "\n")

    def addr(self, text: str) -> int:
        text = text.strip().lstrip("*")
        base, plus, off = text.partition("+")
        if base in self.symbols:
            return self.symbols[base] + (int(off, 0) if plus else 0)
        try:
            return int(text, 0)
        except ValueError:
            raise ValueError(f"unknown address or symbol '{text}'") from None

    def where(self, addr: int) -> str:
        best = max((a for a in self.by_addr if a <= addr), default=None)
        return f"{addr:#x} <{self.by_addr[best]}+{addr - best}>" if best is not None else f"{addr:#x}"

    def insn(self, addr: int) -> str:
        try:
            code = self.tl.read_memory(addr, 16)
        except ValueError:
            return "(not in RAM)"
        i = next(self.md.disasm(code, addr, 1), None)
        return f"{i.mnemonic} {i.op_str}".strip() if i else "(bad instruction)"

    def report(self, stop: Stop) -> None:
        text = {"step": "", "breakpoint": "breakpoint hit", "watchpoint": "watchpoint hit",
                "begin": "reached the start of the recording", "end": "reached the end of the recording",
                "exited": f"guest exited with status {stop.exit_status}", "interrupt": "interrupted",
                "icount-break": "icount breakpoint", "fault": f"stopped: {stop.message}"}[stop.reason]
        if stop.watch_addr is not None:
            text += f" at {stop.watch_addr:#x}"
        prefix = f"{text}\n" if text else ""
        self.say(f"{prefix}icount {stop.icount}  {self.where(stop.pc)}:  {self.insn(stop.pc)}")

    def run(self, action) -> None:
        try:
            self.report(action())
        except ValueError as e:
            self.say(f"error: {e}")

    def onecmd(self, line: str) -> bool:
        try:
            return super().onecmd(line)
        except ValueError as e:
            self.say(f"error: {e}")
            return False

    def default(self, line: str) -> bool:
        aliases = {"si": "stepi", "rsi": "reverse_stepi", "c": "continue", "rc": "reverse_continue",
                   "n": "next", "rn": "reverse_next", "b": "break", "q": "quit",
                   "reverse-stepi": "reverse_stepi", "reverse-continue": "reverse_continue",
                   "reverse-next": "reverse_next", "last-write": "last_write"}
        verb, _, rest = line.partition(" ")
        if verb in aliases:
            return self.onecmd(f"{aliases[verb]} {rest}")
        self.say(f"unknown command '{verb}' (try 'help')")
        return False

    def emptyline(self) -> bool:
        return False

    # -- commands -----------------------------------------------------------------------------

    def do_stepi(self, arg: str) -> None:
        """stepi [N]: execute N instructions (default 1)."""
        for _ in range(int(arg or 1)):
            stop = self.tl.stepi()
            if stop.reason != "step":
                break
        self.report(stop)

    def do_reverse_stepi(self, arg: str) -> None:
        """reverse-stepi [N]: go back N instructions."""
        for _ in range(int(arg or 1)):
            stop = self.tl.reverse_stepi()
            if stop.reason != "step":
                break
        self.report(stop)

    def do_next(self, arg: str) -> None:
        """next: one instruction, stepping over calls."""
        self.run(self.tl.next)

    def do_reverse_next(self, arg: str) -> None:
        """reverse-next: back one instruction, stepping back over calls."""
        self.run(self.tl.reverse_next)

    def do_continue(self, arg: str) -> None:
        """continue: run to a breakpoint, watchpoint or the end."""
        self.run(self.tl.cont)

    def do_reverse_continue(self, arg: str) -> None:
        """reverse-continue: run backwards to the previous breakpoint or watchpoint hit."""
        self.run(self.tl.reverse_cont)

    def do_break(self, arg: str) -> None:
        """break ADDR|SYMBOL: stop before executing that instruction."""
        a = self.addr(arg)
        self.tl.add_breakpoint(a)
        self.say(f"breakpoint at {self.where(a)}")

    def do_delete(self, arg: str) -> None:
        """delete: remove all breakpoints and watchpoints."""
        for a in list(self.tl.breakpoints):
            self.tl.remove_breakpoint(a)
        for a, n in self.watches:
            self.tl.remove_watchpoint(a, n, "w")
        self.watches.clear()

    def do_watch(self, arg: str) -> None:
        """watch ADDR|SYMBOL [LEN]: stop when memory there is written (default 8 bytes)."""
        parts = shlex.split(arg)
        a, n = self.addr(parts[0]), int(parts[1], 0) if len(parts) > 1 else 8
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
            self.say("info registers | snapshots | replay | breakpoints")

    def do_x(self, arg: str) -> None:
        """x ADDR [LEN]: hex dump of memory (default 64 bytes)."""
        parts = shlex.split(arg)
        a, n = self.addr(parts[0]), int(parts[1], 0) if len(parts) > 1 else 64
        data = self.tl.read_memory(a, n)
        for off in range(0, len(data), 16):
            row = data[off:off + 16]
            self.say(f"{a + off:#014x}: {row.hex(' ')}")

    def do_disas(self, arg: str) -> None:
        """disas [ADDR] [N]: disassemble N instructions (default: 5 at the current one)."""
        parts = shlex.split(arg)
        a = self.addr(parts[0]) if parts else self.tl.pc()
        n = int(parts[1]) if len(parts) > 1 else 5
        code = self.tl.read_memory(a, 16 * n)
        for i, ins in zip(range(n), self.md.disasm(code, a)):
            mark = "=>" if ins.address == self.tl.pc() else "  "
            self.say(f"{mark} {self.where(ins.address)}:  {ins.mnemonic} {ins.op_str}")

    def do_goto(self, arg: str) -> None:
        """goto ICOUNT: go to exactly that instruction count (backwards or forwards)."""
        self.run(lambda: self.tl.seek(int(arg, 0)))

    def do_last_write(self, arg: str) -> None:
        """last-write ADDR|SYMBOL [LEN]: when was this memory last written before now?"""
        parts = shlex.split(arg)
        a, n = self.addr(parts[0]), int(parts[1], 0) if len(parts) > 1 else 8
        found = self.tl.last_write(a, n)
        if found is None:
            self.say(f"no write to {self.where(a)} since the start of the recording")
            return
        icount, rip, old, new = found
        self.say(f"last write to {self.where(a)}: icount {icount} at {self.where(rip)}: "
                 f"{self.insn(rip)}\n  old {old.hex(' ')}\n  new {new.hex(' ')}")

    def do_savevm(self, arg: str) -> None:
        """savevm NAME: take a named snapshot here (load it later with -loadvm NAME)."""
        if self.tl.snapshots is None or not arg.strip():
            self.say("savevm needs a name and a replay or recording with a catalog")
            return
        info = self.tl.snapshots.take(arg.strip(), "named")
        self.say(f"snapshot {info.name} at icount {info.icount}")

    def do_quit(self, arg: str) -> Optional[bool]:
        """quit: leave the debugger."""
        return True

    do_EOF = do_quit
