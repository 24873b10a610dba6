"""GDB remote serial protocol stub over a Timeline, for `urr -gdb tcp::1234` / `-s`.

Speaks the protocol (its wire: debugger.gdbwire) as GDB 13 uses it against a single-threaded
all-stop target: target.xml from debugger.tdesc, registers, memory, software/hardware breakpoints
and watchpoints (all mapped onto the timeline's), forward and reverse (`bs`/`bc`) execution,
Ctrl-C, and QEMU's replay monitor commands (`monitor info replay`, `replay_break`,
`replay_delete_break`, `replay_seek`).

    server = GdbServer(timeline, port=1234)
    server.listen()
    how = server.serve_one()   # "detach" | "kill" | "disconnect"
"""
from __future__ import annotations

import logging
import re
import select
import socket
import sys
from typing import Callable, Optional

from debugger.agentexpr import AgentExprError, BoundCondition, Condition, parse_conditions
from debugger.gdbwire import Disconnected, Wire, addr_len, escape, hex_int, unescape
from debugger.symbols import parse_number
from debugger.tdesc import Description, Reg, for_mode
from debugger.timeline import Stop, Timeline
from debugger.writes import last_write_text

log = logging.getLogger(__name__)

PACKET_SIZE = 0x4000  # the largest packet we accept; GDB sizes its m/X/qXfer requests to it
MAX_MEMORY = (PACKET_SIZE - 16) // 2  # bytes of memory one hex-encoded `m` reply can carry
THREAD = "01"  # the one thread GDB sees
SIGINT, SIGTRAP, SIGSEGV = 0x02, 0x05, 0x0B
MAX_ERROR_TEXT = 200  # characters of an E.message reply

MONITOR_HELP = """\
info replay            the current position in the recording (icount)
info snapshots         the snapshots a replay restores to go back
replay_break ICOUNT    stop when execution reaches ICOUNT (in either direction)
replay_delete_break    remove the replay breakpoint
replay_seek ICOUNT     go to ICOUNT
step_interrupts on|off whether steps stop in interrupt handlers (off: a step during which the
                       guest takes an interrupt goes on through the handler, both directions)
replay_branch [-f] NEWFILE
                       leave the replay here and record from here into NEWFILE (-f: replace it)
last_write ADDR [LEN]  the last write to LEN bytes (default 8) at ADDR before here: its icount,
                       the instruction that made it (or that GDB made it while recording), the
                       old and new bytes; the position does not move
"""

_FRAME_REGISTERS = ("rbp", "rsp", "rip")  # what Timeline.frame_registers gives, in its order
_MSR_EFER, _EFER_LMA = "efer", 1 << 10
_WATCH_STOP = {"w": "watch", "r": "rwatch", "a": "awatch"}
_WATCH_KIND = {"2": "w", "3": "r", "4": "a"}


def _icount(text: str) -> int:
    """A monitor command's ICOUNT operand (decimal, or 0x-prefixed hex)."""
    try:
        value = int(text, 0)
    except ValueError:
        raise ValueError(f"bad icount {text!r}") from None
    if value < 0:
        raise ValueError(f"bad icount {text!r}")
    return value


def _encode_reg(reg: Reg, value: Optional[int]) -> str:
    if value is None:  # "xx": GDB shows the register as <unavailable>
        return "xx" * reg.size
    return (value & ((1 << reg.bits) - 1)).to_bytes(reg.size, "little").hex()


class GdbServer:
    """Listens for GDB and serves one connection at a time over `timeline`."""

    def __init__(self, timeline: Timeline, host: str = "127.0.0.1", port: int = 1234) -> None:
        self.timeline = timeline
        self.host = host
        self.port = port
        self._listener: Optional[socket.socket] = None

    def listen(self) -> None:
        """Bind and listen; with port 0 the kernel picks one, found in `.port` afterwards."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._listener = socket.create_server((self.host, self.port), family=family)
        self.port = self._listener.getsockname()[1]

    def client_waiting(self, timeout: float) -> bool:
        """Whether a GDB has connected and waits to be served (checked for up to `timeout` s)."""
        if self._listener is None:
            raise RuntimeError("GdbServer.client_waiting() before listen()")
        return bool(select.select([self._listener], [], [], timeout)[0])

    def serve_one(self) -> str:
        """Accept one GDB and serve it; returns "detach", "kill" or "disconnect"."""
        if self._listener is None:
            raise RuntimeError("GdbServer.serve_one() before listen()")
        conn, _ = self._listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # many small request/replies
        try:
            return _Session(self.timeline, Wire(conn)).serve()
        finally:
            conn.close()

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None


class _Session:
    """One GDB connection: packet handlers and the breakpoints GDB inserted through it."""

    def __init__(self, timeline: Timeline, wire: Wire) -> None:
        self.tl = timeline
        self.wire = wire
        self.last_stop = f"T{SIGTRAP:02x}thread:{THREAD};"
        self.breaks: dict[int, set[str]] = {}  # address -> the Z types ("0", "1") inserted there
        self.watches: set[tuple[int, int, str]] = set()
        self.icount_breaks = False
        self.ended: Optional[str] = None
        self.error_text = False  # GDB takes E.message replies (it said error-message+)
        self.long_mode = self._long_mode()
        self.desc: Description = for_mode(self.long_mode)  # this connection's, for its whole life
        self.registers = self.desc.registers
        # regnums of RBP, RSP, RIP (or their 32-bit views), expedited in stop replies
        self.expedited = [next(i for i, r in enumerate(self.registers) if r.machine_name == name)
                          for name in _FRAME_REGISTERS]
        self.handlers: dict[str, Callable[[str], Optional[str]]] = {
            "?": lambda _: self.last_stop, "g": self.read_all, "G": self.write_all,
            "p": self.read_one, "P": self.write_one, "m": self.read_mem, "M": self.write_mem,
            "X": self.write_binary,
            "s": self.step, "c": self.cont, "S": self.step_signal, "C": self.cont_signal,
            "bs": lambda _: self.reverse(self.tl.reverse_stepi, watched=False),
            "bc": lambda _: self.reverse(self.tl.reverse_cont), "Z": self.insert, "z": self.remove,
            "H": lambda _: "OK", "T": lambda _: "OK", "k": self.kill, "D": self.detach,
            "qSupported": self.supported, "qXfer": self.xfer, "qRcmd": self.monitor,
            "qAttached": lambda _: "1", "qC": lambda _: f"QC{THREAD}",
            "qfThreadInfo": lambda _: f"m{THREAD}", "qsThreadInfo": lambda _: "l",
            "QStartNoAckMode": lambda _: "OK", "vCont?": lambda _: "vCont;c;C;s;S;r", "vCont": self.vcont,
        }
        # (words, takes an ICOUNT (None: the rest of the words as they are), method)
        self.monitor_commands: list[tuple[tuple[str, ...], Optional[bool], Callable[..., str]]] = [
            (("info", "replay"), False, self.info_replay),
            (("info", "snapshots"), False, self.tl.snapshots_text),
            (("replay_break",), True, self.replay_break),
            (("replay_delete_break",), False, self.replay_delete_break),
            (("replay_seek",), True, self.replay_seek),
            (("step_interrupts", "on"), False, lambda: self.step_interrupts(True)),
            (("step_interrupts", "off"), False, lambda: self.step_interrupts(False)),
            (("step_interrupts",), False, lambda: self.step_interrupts(None)),
            (("replay_branch",), None, self.replay_branch),
            (("last_write",), None, self.last_write),
            (("help",), False, lambda: MONITOR_HELP),
        ]

    def serve(self) -> str:
        try:
            while self.ended is None:
                packet = self.wire.read_packet()
                reply = "E01" if packet is None else self.handle(packet)
                if reply is not None:
                    self.wire.send(reply.encode("latin-1"))
                    if packet == b"QStartNoAckMode":
                        self.wire.acks = False  # from after GDB's ack of our OK
            return self.ended
        except Disconnected:
            return "disconnect"
        finally:
            self.forget_breakpoints()

    def handle(self, packet: bytes) -> Optional[str]:
        """The reply to one packet (None: none is sent); errors become E replies, never exceptions."""
        text = packet.decode("latin-1")  # byte for byte, so X's binary data survives
        name = re.match(r"[qQv][A-Za-z]+\??|b[sc]|.?", text).group()
        handler = self.handlers.get(name)
        if handler is None:
            return ""  # unsupported: GDB falls back or tells the user
        try:
            return handler(text[len(name):])
        except ValueError as e:  # bad input, or a request the position cannot take
            return self.error_reply(name, str(e))
        except Exception as e:  # a failing command must not end the debugging session
            log.error("urr: gdb stub: packet %r failed: %s: %s", text[:64], type(e).__name__, e)
            return self.error_reply(name, f"{type(e).__name__}: {e}")

    def error_reply(self, name: str, message: str) -> str:
        """`E.message` to a GDB that accepts it (qSupported's error-message+, GDB 15 on); else
        E01, the message then going to urr's standard error, where the user sees it."""
        line = message.splitlines()[0] if message else "error"
        if self.error_text:
            return "E." + "".join(c if " " <= c <= "~" and c not in "$#}*" else "?" for c in line)[:MAX_ERROR_TEXT]
        print(f"urr: gdb {name or 'packet'}: {line}", file=sys.stderr, flush=True)
        return "E01"

    def forget_breakpoints(self) -> None:
        """Remove what this connection inserted, so a later run is not stopped by a dead session's."""
        for addr in self.breaks:
            self.tl.remove_breakpoint(addr)
        for watch in self.watches:
            self.tl.remove_watchpoint(*watch)
        if self.icount_breaks:
            self.tl.clear_icount_breaks()
        self.breaks.clear()
        self.watches.clear()

    def console(self, text: str) -> None:
        """Text for GDB's console, as `O` packets."""
        data = text.encode()
        for i in range(0, len(data), 1024):
            self.wire.send(b"O" + data[i:i + 1024].hex().encode())

    # -- connection ---------------------------------------------------------------------------

    def supported(self, args: str) -> str:
        self.error_text = "error-message+" in args.lstrip(":").split(";")
        features = [f"PacketSize={PACKET_SIZE:x}", "qXfer:features:read+", "swbreak+", "hwbreak+",
                    "ConditionalBreakpoints+"]
        if self.tl.can_reverse:
            features += ["ReverseStep+", "ReverseContinue+"]
        return ";".join(features + ["QStartNoAckMode+", "vContSupported+"])

    def xfer(self, args: str) -> str:
        """qXfer:features:read:target.xml:OFFSET,LENGTH; other objects are unsupported."""
        obj, op, annex, span = args.lstrip(":").split(":")
        if (obj, op) != ("features", "read"):
            return ""
        if annex != "target.xml":
            return "E00"
        offset, length = addr_len(span)
        data = self.desc.xml().encode()
        chunk = data[offset:offset + length]
        more = offset + length < len(data)
        return ("m" if more else "l") + escape(chunk).decode("latin-1")

    def kill(self, _args: str) -> None:
        self.ended = "kill"  # GDB expects no reply to k

    def detach(self, _args: str) -> str:
        self.ended = "detach"
        return "OK"

    # -- registers and memory -----------------------------------------------------------------

    def _long_mode(self) -> bool:
        return bool(self.tl.read_register(_MSR_EFER) & _EFER_LMA)

    def read_all(self, _args: str) -> str:
        regs = self.tl.read_registers()
        return "".join(_encode_reg(r, regs.get(r.machine_name)) for r in self.registers)

    def write_all(self, args: str) -> str:
        """G: write back only the registers whose value changed (rewriting cs or cr0 has effects)."""
        data = bytes.fromhex(args)
        if len(data) != self.desc.g_packet_size:
            raise ValueError(f"{len(data)} bytes of registers, not {self.desc.g_packet_size}")
        current = self.tl.read_registers()
        offset = 0
        for reg in self.registers:
            value = int.from_bytes(data[offset:offset + reg.size], "little")
            offset += reg.size
            if reg.machine_name in current and value != current[reg.machine_name] & ((1 << reg.bits) - 1):
                self._write(reg, value, current[reg.machine_name])
        return "OK"

    def _write(self, reg: Reg, value: int, old: int) -> None:
        """A 32-bit view writes the low half of its machine register and keeps the rest."""
        if reg.source:
            value |= old & ~((1 << reg.bits) - 1)
        self.tl.write_register(reg.machine_name, value)

    def _register(self, number: str) -> Reg:
        n = hex_int(number)
        if n >= len(self.registers):
            raise ValueError(f"no register {n}")
        return self.registers[n]

    def _register_bits(self, number: int) -> Optional[int]:
        """The width of register `number` (its regnum in target.xml), None if there is none."""
        return self.registers[number].bits if number < len(self.registers) else None

    def read_one(self, args: str) -> str:
        reg = self._register(args)
        return _encode_reg(reg, self.tl.read_registers().get(reg.machine_name))

    def write_one(self, args: str) -> str:
        number, value = args.split("=")
        reg = self._register(number)
        data = bytes.fromhex(value)
        if len(data) != reg.size:
            raise ValueError(f"register {reg.name} has {reg.size} bytes, not {len(data)}")
        self._write(reg, int.from_bytes(data, "little"), self.tl.read_register(reg.machine_name) if reg.source else 0)
        return "OK"

    def read_mem(self, args: str) -> str:
        """m: as many bytes as are readable from the start (GDB accepts short reads), E14 if none."""
        addr, length = addr_len(args)
        length = min(length, MAX_MEMORY)
        try:
            return self.tl.read_memory(addr, length).hex()
        except ValueError:
            pass
        readable = bytearray()
        for a in range(addr, addr + length):
            try:
                readable += self.tl.read_memory(a, 1)
            except ValueError:
                break
        return readable.hex() if readable else "E14"

    def _store(self, addr: int, length: int, data: bytes) -> str:
        if len(data) != length:
            raise ValueError(f"{len(data)} bytes of data for a write of {length}")
        try:
            self.tl.write_memory(addr, data)
        except ValueError:
            return "E14"
        return "OK"

    def write_mem(self, args: str) -> str:
        span, hexdata = args.split(":")
        return self._store(*addr_len(span), bytes.fromhex(hexdata))

    def write_binary(self, args: str) -> str:
        span, data = args.split(":", 1)
        addr, length = addr_len(span)
        return self._store(addr, length, unescape(data.encode("latin-1"))) if length else "OK"  # a probe

    # -- execution ----------------------------------------------------------------------------

    def _run(self, action: Callable[[], Stop], addr: str = "", watched: bool = True) -> str:
        """Run `action` and report its stop. A single step is not `watched` for Ctrl-C: it is
        over before it would look."""
        if addr:
            self.tl.write_register("rip", hex_int(addr))
        changed_at = self._changed_at()
        try:
            stop = self.wire.run_watched(action, self.tl) if watched else action()
        except ValueError as e:  # e.g. no snapshot to go back to
            self.console(f"urr: {e}\n")
            return "E01"
        back = self._back_on_recording(changed_at)
        if back:
            self.console(back)
        if stop.reason in ("fault", "watchpoint") and stop.message:  # a watchpoint: a write GDB made while recording
            self.console(f"urr: {stop.message}\n")
        elif stop.reason == "icount-break":  # GDB itself can only say SIGTRAP
            self.console(f"urr: replay breakpoint: icount {stop.icount}\n")
        self._tell_mode_change()
        self.last_stop = self.stop_reply(stop)
        return self.last_stop

    def _tell_mode_change(self) -> None:
        """Say, when the CPU has entered or left long mode, that this connection keeps its
        register description and how to get the other one."""
        long_mode = self._long_mode()
        if long_mode == self.long_mode:
            return
        self.long_mode = long_mode
        if for_mode(long_mode) is not self.desc:
            now = "64-bit long mode" if long_mode else "32-bit protected mode"
            self.console(f"urr: the CPU is in {now} now; this connection keeps its {self.desc.architecture} "
                         f"registers (`disconnect`, then `target remote` again, for {for_mode(long_mode).architecture})\n")

    def _changed_at(self) -> Optional[int]:
        """Where the debugger first changed this replay (None while it is on its recording)."""
        return self.tl.divergence().icount if self.tl.off_recording else None

    def _back_on_recording(self, changed_at: Optional[int]) -> str:
        """The console line for a run or seek that went back (or far ahead) from a replay the
        debugger changed: it restored the recorded state, so the user's writes are gone."""
        if changed_at is None or self.tl.off_recording:
            return ""
        return (f"urr: back on the recording at icount {self.tl.icount}: the debugger's changes "
                f"(since icount {changed_at}) are undone\n")

    def step(self, addr: str) -> str:
        return self._run(self.tl.stepi, addr, watched=False)

    def cont(self, addr: str) -> str:
        return self._run(self.tl.cont, addr)

    def step_signal(self, args: str) -> str:
        """S sig[;addr]: bare metal has no signals to deliver, so this is `s`."""
        hex_int(args.split(";")[0])
        return self.step(args.partition(";")[2])

    def cont_signal(self, args: str) -> str:
        hex_int(args.split(";")[0])
        return self.cont(args.partition(";")[2])

    def vcont(self, args: str) -> str:
        """vCont;ACTION[:thread]...: one thread, so the first action is the one for it. Range
        stepping (r) runs until the PC leaves the range, in one resume."""
        actions = args.split(";")
        if len(actions) < 2 or actions[0] != "":
            raise ValueError("vCont without an action")
        action = actions[1].split(":")[0]
        if action[:1] in ("S", "C"):  # with a signal, which bare metal has none to deliver
            if len(action) != 3:
                raise ValueError(f"vCont action {action!r}: expected a two-digit signal")
            hex_int(action[1:])
            action = action[0].lower()
        if action == "s":
            return self._run(self.tl.stepi, watched=False)
        if action == "c":
            return self._run(self.tl.cont)
        if action.startswith("r"):  # rSTART,END: step while the PC stays in [START, END)
            start, end = (hex_int(a) for a in action[1:].split(","))
            if end <= start:
                raise ValueError(f"empty step range {start:#x}-{end:#x}")
            return self._run(lambda: self.tl.step_range(start, end))
        raise ValueError(f"unknown vCont action {action!r}")

    def reverse(self, action: Callable[[], Stop], watched: bool = True) -> str:
        """bs/bc.  GDB sends them when qSupported offered ReverseStep/ReverseContinue, which a
        recording does not: so to a replay branched since (GDB does not ask again), or forced. Those
        get the reason on the console and E01. A reverse step, like a step, is not `watched` for Ctrl-C."""
        if not self.tl.can_reverse:
            self.console(f"urr: {self.tl.reverse_refusal()}\n")
            return "E01"
        return self._run(action, watched=watched)

    def stop_reply(self, stop: Stop) -> str:
        if stop.reason == "exited":
            return f"W{(stop.exit_status or 0) & 0xFF:02x}"
        signal = {"interrupt": SIGINT, "fault": SIGSEGV}.get(stop.reason, SIGTRAP)
        reply = f"T{signal:02x}thread:{THREAD};"
        # The frame registers, expedited: GDB stepping through a line then needs no `g` packet.
        for number, value in zip(self.expedited, self.tl.frame_registers()):
            reply += f"{number:02x}:{_encode_reg(self.registers[number], value)};"
        if stop.reason == "breakpoint":
            kinds = self.breaks.get(stop.pc, {"0"})
            reply += "swbreak:;" if "0" in kinds else "hwbreak:;"
        elif stop.reason == "watchpoint" and stop.watch_kind in _WATCH_STOP:
            reply += f"{_WATCH_STOP[stop.watch_kind]}:{self._watched_address(stop):x};"
        elif stop.reason in ("begin", "end"):
            reply += f"replaylog:{stop.reason};"  # GDB: "No more reverse-execution history."
        return reply

    def _watched_address(self, stop: Stop) -> int:
        """An address inside the region that fired: GDB matches a stop to a watchpoint by
        containment, but the timeline reports an access's first byte, which lies before the
        region when a wider access overlaps its start."""
        addr = stop.watch_addr or 0
        regions = [(a, n) for a, n, kind in self.watches if kind == stop.watch_kind]
        if any(a <= addr < a + n for a, n in regions):
            return addr
        return min((a for a, _ in regions if a > addr), default=addr)

    # -- breakpoints and watchpoints ------------------------------------------------------------

    def _z_args(self, args: str) -> tuple[str, int, int]:
        kind, addr, length = args.split(";")[0].split(",")
        return kind, hex_int(addr), hex_int(length)

    def _condition(self, args: str) -> Optional[Callable[[], bool]]:
        """The breakpoint condition of a Z0/Z1 packet's cond_list, as the timeline checks it at each
        hit: true when any expression is non-zero, or cannot be evaluated (GDB evaluates it again
        at the stop and resumes if it is false). None: no conditions. AgentExprError if malformed."""
        _, semicolon, conditions = args.partition(";")
        if not semicolon:
            return None
        exprs = parse_conditions(conditions, self._register_bits)
        registers = [(r.machine_name, r.bits, bool(r.source)) for r in self.registers]
        return BoundCondition(Condition(exprs, registers), self.tl.read_register, self.tl.read_memory)

    def insert(self, args: str) -> str:
        kind, addr, length = self._z_args(args)
        if kind in ("0", "1"):
            try:
                condition = self._condition(args)
            except AgentExprError as e:  # GDB says it cannot insert the breakpoint
                raise ValueError(f"breakpoint condition: {e}") from None
            self.tl.add_breakpoint(addr, condition)
            self.breaks.setdefault(addr, set()).add(kind)
        elif ";" in args:
            raise ValueError("conditions are offered for breakpoints only")
        elif kind in _WATCH_KIND:  # GDB ignores `watch` hits that leave the value alone: so do we
            self.tl.add_watchpoint(addr, length, _WATCH_KIND[kind], changes_only=kind == "2")
            self.watches.add((addr, length, _WATCH_KIND[kind]))
        else:
            return ""
        return "OK"

    def remove(self, args: str) -> str:
        kind, addr, length = self._z_args(args)
        if kind in ("0", "1"):
            kinds = self.breaks.get(addr, set())
            kinds.discard(kind)
            if not kinds and addr in self.breaks:
                del self.breaks[addr]
                self.tl.remove_breakpoint(addr)
        elif kind in _WATCH_KIND:
            watch = (addr, length, _WATCH_KIND[kind])
            if watch in self.watches:
                self.watches.discard(watch)
                self.tl.remove_watchpoint(*watch)
        else:
            return ""
        return "OK"

    # -- monitor commands -----------------------------------------------------------------------

    def monitor(self, args: str) -> str:
        """qRcmd,HEX: output as O packets, then OK (GDB shows an E reply only as "Protocol error")."""
        words = bytes.fromhex(args.lstrip(",")).decode(errors="replace").split()
        for name, takes_icount, method in self.monitor_commands:
            if tuple(words[:len(name)]) == name:
                operands = words[len(name):]
                try:
                    if takes_icount is None:
                        text = method(operands)
                    elif len(operands) != takes_icount:
                        raise ValueError(f"usage: {' '.join(name)}{' ICOUNT' if takes_icount else ''}")
                    else:
                        text = method(_icount(operands[0])) if takes_icount else method()
                except ValueError as e:
                    text = f"error: {e}\n"
                break
        else:
            text = f"unknown monitor command {' '.join(words)!r}; try 'monitor help'\n"
        self.console(text)
        return "OK"

    def info_replay(self) -> str:
        return f"Recording position: icount {self.tl.icount}\n"

    def step_interrupts(self, on: Optional[bool]) -> str:
        if on is not None:
            self.tl.step_into_interrupts = on
        return self.tl.interrupt_steps.text()

    def replay_break(self, icount: int) -> str:
        """Like QEMU's, one replay breakpoint at a time; it stops cont and reverse-continue alike."""
        self.tl.clear_icount_breaks()
        self.tl.set_icount_break(icount)
        self.icount_breaks = True
        return f"replay breakpoint at icount {icount}\n"

    def replay_delete_break(self) -> str:
        self.tl.clear_icount_breaks()
        return "replay breakpoint deleted\n"

    def replay_seek(self, icount: int) -> str:
        changed_at = self._changed_at()
        stop = self.tl.seek(icount)
        self.last_stop = self.stop_reply(stop)
        fault = f"urr: {stop.message}\n" if stop.reason == "fault" and stop.message else ""
        return (f"{self._back_on_recording(changed_at)}{fault}at icount {stop.icount}, pc {stop.pc:#x}; "
                "GDB still shows the old registers until 'maintenance flush register-cache'\n")

    def last_write(self, words: list[str]) -> str:
        """The console's last-write, which GDB has no command for (symbols: `eval "monitor
        last_write %p 8", &VAR`); the position does not move, but a replay the debugger changed
        is back on its recording after it, as after a seek."""
        if len(words) not in (1, 2):
            raise ValueError("usage: last_write ADDR [LEN]")
        addr, length = parse_number(words[0], "address"), parse_number((words + ["8"])[1], "length", 1)
        changed_at = self._changed_at()  # the search replays the recording: the user's changes go
        found = self.tl.last_write(addr, length)
        return f"{self._back_on_recording(changed_at)}{last_write_text(found, f'{addr:#x}', lambda rip: f'{rip:#x}')}\n"

    def replay_branch(self, words: list[str]) -> str:
        """Go live here into a new recording; GDB stays attached, debugging it forwards."""
        force = words[:1] == ["-f"]
        if len(words) != 1 + force:
            raise ValueError("usage: replay_branch [-f] NEWFILE")
        return self.tl.branch(words[-1], overwrite=force) + "\n"
