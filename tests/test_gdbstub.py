"""The GDB stub over real TCP against a FakeTimeline: raw packets, and once the real gdb."""
from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from typing import Callable, Optional

import pytest

from debugger import tdesc
from debugger.gdbstub import GdbServer
from debugger.gdbwire import parse_gdb_address
from debugger.timeline import Stop

CODE = 0x1000  # fake instructions are 4 bytes apart from here
RAM = 0x10000  # bytes of fake memory; above is unmapped
DATA = 0x4000
REG_NAMES = ([*"rax rbx rcx rdx rsi rdi rbp rsp".split(), *(f"r{i}" for i in range(8, 16)), "rip", "eflags",
              *"cs ss ds es fs gs fs_base gs_base cr0 cr2 cr3 cr4 cr8 efer".split(),
              *(f"st{i}" for i in range(8)), *"fctrl fstat ftag fiseg fioff foseg fooff fop".split(),
              *(f"xmm{i}" for i in range(16)), "mxcsr"])


class FakeTimeline:
    """A tiny deterministic machine over `program` (one tuple per 4-byte instruction) with the
    Timeline interface.  Going back re-executes from the start, like a replay with one snapshot.

    Instructions: ("nop",), ("add", reg, n), ("store", addr, size, value), ("load", addr, size),
    ("jmp", addr), ("exit", status), ("fault", message)."""

    def __init__(self, program: list[tuple], can_reverse: bool = True, end: Optional[int] = None) -> None:
        self.program = {CODE + 4 * i: insn for i, insn in enumerate(program)}
        self.can_reverse = can_reverse
        self.end = end  # icount at which the recording ends ("end"), None: never
        self.breakpoints: set[int] = set()
        self.conditions: dict[int, Optional[Callable[[], bool]]] = {}
        self.watchpoints: set[tuple[int, int, str]] = set()
        self.icount_breaks: set[int] = set()
        self._interrupt = threading.Event()
        self.interrupt_poll: Optional[Callable[[], bool]] = None  # the real Timeline's: asked where it checks
        self._reset()

    def _reset(self) -> None:
        self.icount = 0
        self.regs = dict.fromkeys(REG_NAMES, 0)
        self.regs.update(rip=CODE, rsp=0x8000, eflags=0x202, cs=0x8, ss=0x10, cr0=0x80000011,
                         fctrl=0x37F, mxcsr=0x1F80, efer=0x500)
        self.mem = bytearray(RAM)
        self.mem[CODE:CODE + 4 * len(self.program)] = b"\x90" * 4 * len(self.program)
        self.exited: Optional[int] = None

    # -- state ------------------------------------------------------------------------------

    def read_registers(self) -> dict[str, int]:
        return dict(self.regs)

    def read_register(self, name: str) -> int:
        return self.regs[name]

    def frame_registers(self) -> list[int]:
        return [self.regs["rbp"], self.regs["rsp"], self.regs["rip"]]

    def write_register(self, name: str, value: int) -> None:
        if name not in self.regs:
            raise ValueError(f"unknown register {name}")
        self.regs[name] = value

    def read_memory(self, addr: int, length: int) -> bytes:
        if addr + length > RAM:
            raise ValueError(f"{addr:#x} not in RAM")
        return bytes(self.mem[addr:addr + length])

    def write_memory(self, addr: int, data: bytes) -> None:
        if addr + len(data) > RAM:
            raise ValueError(f"{addr:#x} not in RAM")
        self.mem[addr:addr + len(data)] = data

    # -- execution ----------------------------------------------------------------------------

    def _stop(self, reason: str, **kw) -> Stop:
        return Stop(reason, self.icount, self.regs["rip"], **kw)

    def _accesses(self) -> list[tuple[int, int, str]]:
        """(addr, size, "r"/"w") of the instruction about to run."""
        insn = self.program.get(self.regs["rip"], ("nop",))
        if insn[0] == "store":
            return [(insn[1], insn[2], "w")]
        if insn[0] == "load":
            return [(insn[1], insn[2], "r")]
        return []

    def _watch_hit(self) -> Optional[tuple[int, str]]:
        for addr, size, access in self._accesses():
            for w_addr, w_len, kind in self.watchpoints:
                if addr < w_addr + w_len and w_addr < addr + size and (kind == "a" or kind == access):
                    return addr, kind
        return None

    def _execute(self) -> Optional[Stop]:
        """Run one instruction; a Stop if it exited or faulted."""
        insn = self.program.get(self.regs["rip"], ("nop",))
        op, args = insn[0], insn[1:]
        if op == "fault":
            return self._stop("fault", message=args[0])
        self.regs["rip"] += 4
        if op == "add":
            self.regs[args[0]] += args[1]
        elif op == "store":
            self.mem[args[0]:args[0] + args[1]] = args[2].to_bytes(args[1], "little")
        elif op == "load":
            self.regs["rax"] = int.from_bytes(self.mem[args[0]:args[0] + args[1]], "little")
        elif op == "jmp":
            self.regs["rip"] = args[0]
        self.icount += 1
        if op == "exit":
            self.exited = args[0]
            return self._stop("exited", exit_status=args[0])
        return None

    def _forward(self, steps: Optional[int]) -> Stop:
        if self.exited is not None:
            return self._stop("exited", exit_status=self.exited)
        start = self.icount
        while True:
            if self.icount > start:
                if self._break_here():
                    return self._stop("breakpoint")
                if self.icount in self.icount_breaks:
                    return self._stop("icount-break")
                if steps is not None and self.icount - start >= steps:
                    return self._stop("step")
            if self.end is not None and self.icount >= self.end:
                return self._stop("end")
            if self._interrupt.is_set() or (self.interrupt_poll is not None and self.interrupt_poll()):
                self._interrupt.clear()
                return self._stop("interrupt")
            hit = self._watch_hit()
            stop = self._execute()
            if stop is not None:
                return stop
            if hit is not None:
                return self._stop("watchpoint", watch_addr=hit[0], watch_kind=hit[1])

    def stepi(self) -> Stop:
        return self._forward(1)

    def step_range(self, start: int, end: int) -> Stop:
        stop = self.stepi()
        while stop.reason == "step" and start <= self.regs["rip"] < end:
            stop = self.stepi()
        return stop

    def cont(self) -> Stop:
        self._interrupt.clear()  # as the real Timeline does
        return self._forward(None)

    def interrupt(self) -> None:
        self._interrupt.set()

    off_recording = False  # its writes are not inputs: a replay the debugger changed stays on its recording

    def reverse_refusal(self) -> str:
        return "" if self.can_reverse else "reverse execution needs a replay"

    def _require_reverse(self) -> None:
        if not self.can_reverse:
            raise ValueError(self.reverse_refusal())

    def seek(self, icount: int) -> Stop:
        if icount < self.icount or self.exited is not None:
            self._require_reverse()
            self._reset()
        while self.icount < icount and (self.end is None or self.icount < self.end):
            if self._execute() is not None:
                break
        return self._stop("step")

    def reverse_stepi(self) -> Stop:
        self._require_reverse()
        if self.icount == 0:
            return self._stop("begin")
        return self.seek(self.icount - 1)

    def reverse_cont(self) -> Stop:
        """Back to the last breakpoint, watched access or icount break before here."""
        self._require_reverse()
        end, hits = self.icount, []
        self._reset()
        while self.icount < end:
            watch = self._watch_hit()
            if self._break_here():
                hits.append((self.icount, "breakpoint", {}))
            elif self.icount in self.icount_breaks:
                hits.append((self.icount, "icount-break", {}))
            elif watch:
                hits.append((self.icount, "watchpoint", {"watch_addr": watch[0], "watch_kind": watch[1]}))
            self._execute()
        if not hits:
            self.seek(0)
            return self._stop("begin")
        icount, reason, kw = hits[-1]
        self.seek(icount)
        return self._stop(reason, **kw)

    def _break_here(self) -> bool:
        condition = self.conditions.get(self.regs["rip"])
        return self.regs["rip"] in self.breakpoints and (condition is None or condition())

    def add_breakpoint(self, addr: int, condition: Optional[Callable[[], bool]] = None) -> None:
        self.breakpoints.add(addr)
        self.conditions[addr] = condition

    def remove_breakpoint(self, addr: int) -> None:
        self.breakpoints.discard(addr)

    def add_watchpoint(self, addr: int, length: int, kind: str, changes_only: bool = False) -> None:
        """(changes_only is the real Timeline's; this one's programs never store the same value)"""
        self.watchpoints.add((addr, length, kind))

    def remove_watchpoint(self, addr: int, length: int, kind: str) -> None:
        self.watchpoints.discard((addr, length, kind))

    def set_icount_break(self, icount: int) -> None:
        self.icount_breaks.add(icount)

    def clear_icount_breaks(self) -> None:
        self.icount_breaks.clear()

    def snapshots_text(self) -> str:
        return "1 snapshots; position icount %d\n  start  icount 0\n" % self.icount


# -- a raw remote-protocol client ------------------------------------------------------------


_EXPEDITED = re.compile(r"(?<=;)[0-9a-f]{2}:[0-9a-f]{16};")  # "NN:value;" in a stop reply


def frame(body: bytes | str) -> bytes:
    body = body.encode("latin-1") if isinstance(body, str) else body
    return b"$%s#%02x" % (body, sum(body) & 0xFF)


class Client:
    """Sends packets and reads replies over TCP, checking checksums and doing the acks."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.acks = True

    def byte(self) -> bytes:
        if not self.buf:
            self.buf = self.sock.recv(65536)
            assert self.buf, "server closed the connection"
        b, self.buf = self.buf[:1], self.buf[1:]
        return b

    def send(self, body: bytes | str) -> None:
        self.sock.sendall(frame(body))
        if self.acks:
            assert self.byte() == b"+"

    def reply(self, ack: bytes = b"+", expedited: bool = False) -> str:
        """The next packet from the server (its checksum checked), acked with `ack`; a stop
        reply without the registers it expedites unless `expedited` (those are checked by
        test_stop_replies_expedite_the_frame_registers)."""
        assert (b := self.byte()) == b"$", f"expected a packet, got {b!r}"
        body = b""
        while (b := self.byte()) != b"#":
            body += b
        assert int(self.byte() + self.byte(), 16) == sum(body) & 0xFF
        if self.acks:
            self.sock.sendall(ack)
        text = body.decode("latin-1")
        return text if expedited or not text.startswith("T") else _EXPEDITED.sub("", text)

    def ask(self, body: bytes | str, expedited: bool = False) -> str:
        self.send(body)
        return self.reply(expedited=expedited)

    def ask_console(self, body: bytes | str) -> tuple[str, str]:
        """(console text of the O packets, final reply)."""
        self.send(body)
        text = ""
        while (r := self.reply()).startswith("O") and r != "OK":
            text += bytes.fromhex(r[1:]).decode()
        return text, r

    def monitor(self, command: str) -> str:
        text, final = self.ask_console("qRcmd," + command.encode().hex())
        assert final == "OK"
        return text

    def close(self) -> None:
        self.sock.close()


class Served:
    """A GdbServer on an ephemeral port serving one connection in a thread."""

    def __init__(self, timeline) -> None:
        self.server = GdbServer(timeline, port=0)
        self.server.listen()
        self.how: Optional[str] = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.how = self.server.serve_one()

    def ended(self) -> Optional[str]:
        self.thread.join(10)
        assert not self.thread.is_alive(), "serve_one did not return"
        return self.how


@pytest.fixture(autouse=True)
def no_unexpected_errors(caplog):
    """Every bad packet must be an expected error: the stub logs unexpected exceptions."""
    yield
    assert not [r.getMessage() for r in caplog.records if r.name == "debugger.gdbstub"]


@pytest.fixture
def stub():
    """stub(timeline) -> (Client, Served)."""
    made: list[tuple[Client, Served]] = []

    def start(timeline) -> tuple[Client, Served]:
        served = Served(timeline)
        client = Client(served.server.port)
        made.append((client, served))
        return client, served

    yield start
    for client, served in made:
        client.close()
        served.thread.join(10)
        served.server.close()


LINEAR = [("add", "rax", 1), ("store", DATA, 8, 0x1122334455667788), ("add", "rbx", 2),
          ("load", DATA, 4), ("nop",), ("exit", 0x103)]
SPIN = [("add", "rcx", 1), ("jmp", CODE)]


def pc_of(timeline) -> int:
    return timeline.regs["rip"]


# -- addresses --------------------------------------------------------------------------------


def test_parse_gdb_address():
    assert parse_gdb_address("tcp::1234") == ("127.0.0.1", 1234)
    assert parse_gdb_address("tcp:0.0.0.0:5000") == ("0.0.0.0", 5000)
    assert parse_gdb_address("tcp:localhost:0") == ("localhost", 0)
    assert parse_gdb_address("tcp:[::1]:7000") == ("::1", 7000)
    for bad in ("1234", "tcp:", "tcp:1234", "tcp::", "tcp::12x", "tcp::70000", "udp::1234", "tcp::-1"):
        with pytest.raises(ValueError, match="expected tcp:\\[HOST\\]:PORT"):
            parse_gdb_address(bad)


def test_listen_reports_the_port_it_got():
    server = GdbServer(FakeTimeline(LINEAR), port=0)
    with pytest.raises(RuntimeError, match="before listen"):
        server.serve_one()
    server.listen()
    try:
        assert server.port > 0 and server.host == "127.0.0.1"
    finally:
        server.close()


# -- connection set-up ------------------------------------------------------------------------


def test_qsupported_offers_reverse_only_when_replaying(stub):
    client, _ = stub(FakeTimeline(LINEAR))
    features = client.ask("qSupported:multiprocess+;swbreak+;hwbreak+;xmlRegisters=i386").split(";")
    assert features[0].startswith("PacketSize=") and int(features[0].split("=")[1], 16) >= 2 * tdesc.G_PACKET_SIZE
    assert set(features[1:]) == {"qXfer:features:read+", "swbreak+", "hwbreak+", "ConditionalBreakpoints+", "ReverseStep+",
                                 "ReverseContinue+", "QStartNoAckMode+", "vContSupported+"}
    recording, _ = stub(FakeTimeline(LINEAR, can_reverse=False))
    features = recording.ask("qSupported").split(";")
    assert "ReverseStep+" not in features and "ReverseContinue+" not in features
    assert "swbreak+" in features and "qXfer:features:read+" in features


def read_target_xml(client: Client, chunk: int = 0x100) -> str:
    data, offset = "", 0
    while True:
        reply = client.ask(f"qXfer:features:read:target.xml:{offset:x},{chunk:x}")
        assert reply[0] in "ml" and len(reply) - 1 <= chunk
        data += reply[1:]
        offset += len(reply) - 1
        if reply[0] == "l":
            return data


def test_target_xml_matches_the_g_packet(stub):
    client, _ = stub(FakeTimeline(LINEAR))
    root = ET.fromstring(read_target_xml(client))
    assert root.tag == "target" and root.findtext("architecture") == "i386:x86-64"
    features = {f.get("name"): [r.get("name") for r in f.findall("reg")] for f in root.findall("feature")}
    assert features["org.gnu.gdb.i386.core"][:17] == REG_NAMES[:17]
    assert features["org.gnu.gdb.i386.core"][24:] == [*(f"st{i}" for i in range(8)), "fctrl", "fstat",
                                                      "ftag", "fiseg", "fioff", "foseg", "fooff", "fop"]
    assert features["org.gnu.gdb.i386.sse"] == [*(f"xmm{i}" for i in range(16)), "mxcsr"]
    assert features["org.gnu.gdb.i386.segments"] == ["fs_base", "gs_base"]
    regs = root.findall("feature/reg")
    assert [int(r.get("regnum")) for r in regs] == list(range(len(regs))) and len(regs) == len(tdesc.REGISTERS)
    assert sorted(r.get("name") for r in regs) == sorted(REG_NAMES)
    assert len(client.ask("g")) == 2 * sum(int(r.get("bitsize")) // 8 for r in regs)
    # Types the registers name are defined in their feature or built into GDB.
    for feature in root.findall("feature"):
        defined = {t.get("id") for t in feature if t.tag in ("flags", "union", "vector")}
        for reg in feature.findall("reg"):
            assert reg.get("type") in defined | {"int", "int32", "int64", "data_ptr", "code_ptr", "i387_ext"}
    assert client.ask("qXfer:features:read:other.xml:0,100") == "E00"
    assert client.ask("qXfer:exec-file:read::0,100") == ""


def test_queries_for_one_stopped_thread(stub):
    client, _ = stub(FakeTimeline(LINEAR))
    assert client.ask("?") == "T05thread:01;"
    assert client.ask("qAttached") == "1"
    assert client.ask("qC") == "QC01"
    assert client.ask("qfThreadInfo") == "m01"
    assert client.ask("qsThreadInfo") == "l"
    assert client.ask("Hg0") == "OK" and client.ask("Hc-1") == "OK"
    assert client.ask("vCont?") == "vCont;c;C;s;S;r"
    assert client.ask("vMustReplyEmpty") == ""
    assert client.ask("qTStatus") == ""
    assert client.ask("qOffsets") == ""
    assert client.ask("Ufoo") == ""


# -- registers and memory ---------------------------------------------------------------------


def regnum(name: str) -> int:
    return [r.name for r in tdesc.REGISTERS].index(name)


def g_offset(name: str) -> int:
    return sum(r.size for r in tdesc.REGISTERS[:regnum(name)])


def test_registers_round_trip(stub):
    tl = FakeTimeline(LINEAR)
    tl.regs.update(rax=0x1122334455667788, st0=0x4000_8000000000000000, xmm3=(1 << 127) | 5, eflags=0x246)
    client, _ = stub(tl)
    g = bytes.fromhex(client.ask("g"))
    assert len(g) == tdesc.G_PACKET_SIZE
    for name in ("rax", "rip", "st0", "xmm3", "eflags", "cs", "fctrl", "mxcsr", "cr0", "efer"):
        size = tdesc.REGISTERS[regnum(name)].size
        assert int.from_bytes(g[g_offset(name):g_offset(name) + size], "little") == tl.regs[name], name

    writes: list[str] = []
    real_write = tl.write_register
    tl.write_register = lambda name, value: (writes.append(name), real_write(name, value))
    changed = bytearray(g)
    changed[g_offset("rbx"):g_offset("rbx") + 8] = (0xDEADBEEF).to_bytes(8, "little")
    changed[g_offset("xmm15"):g_offset("xmm15") + 16] = bytes(range(16))
    assert client.ask("G" + changed.hex()) == "OK"
    assert writes == ["rbx", "xmm15"]  # only what changed: rewriting cs or cr0 would have effects
    assert tl.regs["rbx"] == 0xDEADBEEF and tl.regs["xmm15"] == int.from_bytes(bytes(range(16)), "little")
    assert client.ask("G" + changed.hex()[:-2]) == "E01"

    assert client.ask(f"p{regnum('st0'):x}") == (0x4000_8000000000000000).to_bytes(10, "little").hex()
    assert client.ask(f"P{regnum('rip'):x}=" + (0x1008).to_bytes(8, "little").hex()) == "OK"
    assert tl.regs["rip"] == 0x1008
    assert client.ask(f"p{regnum('rip'):x}") == (0x1008).to_bytes(8, "little").hex()
    assert client.ask(f"P{regnum('fs_base'):x}=" + "ff" * 8) == "OK" and tl.regs["fs_base"] == (1 << 64) - 1
    assert client.ask(f"P{regnum('eflags'):x}=" + "00" * 8) == "E01"  # eflags is 4 bytes
    assert client.ask(f"p{len(tdesc.REGISTERS):x}") == "E01"


def test_missing_register_reads_as_unavailable(stub):
    tl = FakeTimeline(LINEAR)
    del tl.regs["cr8"]
    client, _ = stub(tl)
    g = client.ask("g")
    assert g[2 * g_offset("cr8"):2 * g_offset("cr8") + 16] == "xx" * 8
    assert client.ask(f"p{regnum('cr8'):x}") == "xx" * 8


def test_memory_round_trip(stub):
    tl = FakeTimeline(LINEAR)
    client, _ = stub(tl)
    assert client.ask(f"M{DATA:x},4:01020304") == "OK"
    assert client.ask(f"m{DATA:x},6") == "010203040000"
    special = bytes([0x23, 0x24, 0x7D, 0x2A, 0x00, 0x03, 0xFF])  # '#', '$', '}', '*' are escaped
    escaped = b"".join(bytes([0x7D, b ^ 0x20]) if b in b"#$}*" else bytes([b]) for b in special)
    assert client.ask(b"X%x,%x:" % (DATA + 8, len(special)) + escaped) == "OK"
    assert tl.read_memory(DATA + 8, len(special)) == special
    assert client.ask(f"m{DATA + 8:x},{len(special):x}") == special.hex()
    assert client.ask(f"X{DATA:x},0:") == "OK"  # GDB's probe for X support
    assert client.ask(f"m{RAM:x},4") == "E14"
    assert client.ask(f"m{RAM - 2:x},8") == "0000"  # a short read: GDB asks again for the rest
    assert client.ask(f"M{RAM:x},1:00") == "E14"
    assert client.ask(f"X{RAM:x},1:a") == "E14"
    assert client.ask(f"M{DATA:x},4:0102") == "E01"
    assert client.ask(f"X{DATA:x},2:a") == "E01"


# -- execution --------------------------------------------------------------------------------


def test_step_and_continue_variants(stub):
    tl = FakeTimeline(LINEAR)
    client, _ = stub(tl)
    assert client.ask("s") == "T05thread:01;" and tl.icount == 1 and pc_of(tl) == CODE + 4
    assert client.ask("vCont;s:1;c") == "T05thread:01;" and tl.icount == 2
    assert client.ask("vCont;S05") == "T05thread:01;" and tl.icount == 3
    assert client.ask("S05") == "T05thread:01;" and tl.icount == 4
    assert client.ask(f"s{CODE:x}") == "T05thread:01;" and pc_of(tl) == CODE + 4  # s ADDR: from ADDR
    assert client.ask("vCont;t") == "E01" and client.ask("vCont") == "E01" and client.ask("vCont;C5") == "E01"
    assert client.ask(f"c{CODE + 0x10:x}") == "W03"  # exit status 0x103 & 0xff, as QEMU reports it
    assert client.ask("?") == "W03"
    assert client.ask("vCont;c") == "W03" and client.ask("C0b") == "W03"


def test_stop_replies_expedite_the_frame_registers(stub):
    """RBP, RSP and RIP ride on every stop reply (as `regnum:little-endian value;`), so GDB
    stepping through a line needs no `g` packet per step."""
    tl = FakeTimeline(LINEAR)
    client, _ = stub(tl)
    tl.regs["rbp"] = 0x1122334455667788

    def field(name: str) -> str:
        return f"{regnum(name):02x}:{tl.regs[name].to_bytes(8, 'little').hex()};"
    reply = client.ask("s", expedited=True)
    assert reply == "T05thread:01;" + field("rbp") + field("rsp") + field("rip") and pc_of(tl) == CODE + 4
    assert client.ask("s", expedited=True).endswith(field("rip")) and pc_of(tl) == CODE + 8


def test_range_step(stub):
    tl = FakeTimeline(LINEAR)
    client, _ = stub(tl)
    assert client.ask(f"vCont;r{CODE:x},{CODE + 12:x}:1") == "T05thread:01;" and pc_of(tl) == CODE + 12
    assert client.ask(f"vCont;r{CODE:x},{CODE + 12:x}") == "T05thread:01;" and pc_of(tl) == CODE + 16  # one step at least
    assert client.ask(f"Z0,{CODE + 20:x},1") == "OK"
    assert client.ask(f"vCont;r{CODE:x},{CODE + 40:x}") == "T05thread:01;swbreak:;" and pc_of(tl) == CODE + 20
    for bad in (f"vCont;r{CODE + 4:x},{CODE:x}", "vCont;r1", "vCont;rzz,10"):
        assert client.ask(bad) == "E01"


def test_breakpoints_report_swbreak_or_hwbreak(stub):
    tl = FakeTimeline(LINEAR)
    client, _ = stub(tl)
    assert client.ask(f"Z0,{CODE + 8:x},1") == "OK"
    assert client.ask(f"Z1,{CODE + 0x10:x},1") == "OK"
    assert tl.breakpoints == {CODE + 8, CODE + 0x10}
    assert client.ask("c") == "T05thread:01;swbreak:;" and pc_of(tl) == CODE + 8
    assert client.ask("vCont;c:01") == "T05thread:01;hwbreak:;" and pc_of(tl) == CODE + 0x10
    assert client.ask(f"Z0,{CODE + 0x10:x},1") == "OK"  # both kinds at one address
    assert client.ask(f"z1,{CODE + 0x10:x},1") == "OK" and CODE + 0x10 in tl.breakpoints
    assert client.ask(f"z0,{CODE + 0x10:x},1") == "OK" and CODE + 0x10 not in tl.breakpoints
    assert client.ask(f"z0,{CODE + 0x10:x},1") == "OK"  # removing twice is harmless
    assert client.ask("bc") == "T05thread:01;swbreak:;" and pc_of(tl) == CODE + 8
    assert client.ask(f"Z5,{CODE:x},1") == ""  # unsupported kind: GDB falls back


def _rcx_equals(n: int) -> str:
    """A cond_list item for `$rcx == n`: reg 2, const8 n, equal, end."""
    code = bytes([0x26, 0x00, 0x02, 0x22, n, 0x13, 0x27])
    return f"X{len(code):x},{code.hex()}"


def test_conditional_breakpoints_stop_only_where_a_condition_holds(stub):
    tl = FakeTimeline(SPIN)
    client, _ = stub(tl)
    assert "ConditionalBreakpoints+" in client.ask("qSupported:swbreak+").split(";")
    jmp = CODE + 4
    assert client.ask(f"Z0,{jmp:x},1;{_rcx_equals(5)}") == "OK"
    assert client.ask("c") == "T05thread:01;swbreak:;" and tl.regs["rcx"] == 5
    # any of several conditions; reinserting replaces the list
    assert client.ask(f"Z0,{jmp:x},1;{_rcx_equals(3)};{_rcx_equals(9)}") == "OK"
    assert client.ask("c") == "T05thread:01;swbreak:;" and tl.regs["rcx"] == 9
    assert client.ask("bc") == "T05thread:01;swbreak:;" and tl.regs["rcx"] == 3
    assert client.ask("bc") == "T05thread:01;replaylog:begin;"
    assert client.ask(f"Z0,{jmp:x},1") == "OK"  # no conditions: every crossing
    assert client.ask("c") == "T05thread:01;swbreak:;" and tl.regs["rcx"] == 1


@pytest.mark.parametrize("conditions", [
    "X2,0a",  # length and bytes disagree
    "X1,zz", "Y3,220127", "X3,220127;", "X0,",  # not hex, not X, an empty item, empty code
    "X2,2201",  # no end
    "X3,000027",  # unknown opcode 0x00
    "X4,26ffff27",  # no register 0xffff
    "X4,26001827",  # reg 24 (st0) is 80 bits wide
    "X1,01",  # float prefix: unsupported
])
def test_malformed_conditions_are_refused_at_insertion(stub, conditions):
    tl = FakeTimeline(SPIN)
    client, _ = stub(tl)
    assert client.ask(f"Z0,{CODE + 4:x},1;{conditions}") == "E01"
    assert CODE + 4 not in tl.breakpoints
    assert client.ask(f"Z2,{DATA:x},8;{_rcx_equals(1)}") == "E01"  # watchpoints take no conditions
    assert client.ask("s") == "T05thread:01;"  # the session goes on


def test_watchpoints_report_watch_rwatch_awatch(stub):
    tl = FakeTimeline(LINEAR)
    client, _ = stub(tl)
    assert client.ask(f"Z2,{DATA:x},8") == "OK" and tl.watchpoints == {(DATA, 8, "w")}
    assert client.ask("c") == f"T05thread:01;watch:{DATA:x};" and pc_of(tl) == CODE + 8
    assert client.ask(f"z2,{DATA:x},8") == "OK" and not tl.watchpoints
    assert client.ask(f"Z3,{DATA:x},4") == "OK"
    assert client.ask("c") == f"T05thread:01;rwatch:{DATA:x};" and pc_of(tl) == CODE + 0x10
    assert client.ask(f"z3,{DATA:x},4") == "OK" and client.ask(f"Z4,{DATA + 4:x},4") == "OK"
    # The 8-byte store starts before the watched word: GDB needs an address inside it.
    assert client.ask("bc") == f"T05thread:01;awatch:{DATA + 4:x};" and pc_of(tl) == CODE + 4
    assert client.ask("bc") == "T05thread:01;replaylog:begin;"
    assert client.ask("c") == f"T05thread:01;awatch:{DATA + 4:x};" and pc_of(tl) == CODE + 8


def test_reverse_step_and_continue(stub):
    tl = FakeTimeline(LINEAR, end=5)
    client, _ = stub(tl)
    assert client.ask("bs") == "T05thread:01;replaylog:begin;" and tl.icount == 0
    assert client.ask("c") == "T05thread:01;replaylog:end;" and tl.icount == 5
    assert client.ask("bs") == "T05thread:01;" and tl.icount == 4 and pc_of(tl) == CODE + 0x10
    assert client.ask(f"Z0,{CODE + 4:x},1") == "OK"
    assert client.ask("bc") == "T05thread:01;swbreak:;" and tl.icount == 1
    assert client.ask("bc") == "T05thread:01;replaylog:begin;" and tl.icount == 0
    assert client.ask("?") == "T05thread:01;replaylog:begin;"


def test_fault_sends_its_message_then_sigsegv(stub):
    tl = FakeTimeline([("nop",), ("fault", "#GP at 0x1004")])
    client, _ = stub(tl)
    text, reply = client.ask_console("c")
    assert "#GP at 0x1004" in text and reply == "T0bthread:01;" and pc_of(tl) == CODE + 4


def test_record_mode_refuses_reverse(stub):
    tl = FakeTimeline(LINEAR, can_reverse=False)
    client, _ = stub(tl)
    assert client.ask("s") == "T05thread:01;"
    for packet in ("bs", "bc"):
        text, reply = client.ask_console(packet)
        assert reply == "E01" and "reverse execution needs a replay" in text
    assert tl.icount == 1
    text = client.monitor("replay_seek 0")
    assert text.startswith("error: reverse execution needs a replay") and tl.icount == 1


def test_replay_refusal_from_the_timeline_is_reported(stub):
    tl = FakeTimeline(LINEAR)
    tl.reverse_cont = lambda: (_ for _ in ()).throw(ValueError("no snapshot at or before icount 0"))
    client, _ = stub(tl)
    text, reply = client.ask_console("bc")
    assert reply == "E01" and "no snapshot at or before icount 0" in text
    assert client.ask("?") == "T05thread:01;"


# -- monitor commands -------------------------------------------------------------------------


def test_monitor_commands(stub):
    tl = FakeTimeline(LINEAR)
    client, _ = stub(tl)
    assert client.monitor("info replay") == "Recording position: icount 0\n"
    assert client.monitor("replay_break 3") == "replay breakpoint at icount 3\n"
    assert client.ask_console("c") == ("urr: replay breakpoint: icount 3\n", "T05thread:01;") and tl.icount == 3
    assert client.monitor("info replay") == "Recording position: icount 3\n"
    assert client.monitor("replay_break 0x1") == "replay breakpoint at icount 1\n"
    assert tl.icount_breaks == {1}  # one at a time, as in QEMU
    assert client.ask_console("bc") == ("urr: replay breakpoint: icount 1\n", "T05thread:01;") and tl.icount == 1
    assert client.monitor("replay_delete_break") == "replay breakpoint deleted\n" and not tl.icount_breaks
    assert client.monitor("replay_seek 4").startswith("at icount 4, pc 0x1010") and tl.icount == 4
    assert client.monitor("info snapshots") == tl.snapshots_text()
    assert "replay_seek ICOUNT" in client.monitor("help")


def test_monitor_errors_are_text(stub):
    tl = FakeTimeline(LINEAR)
    client, _ = stub(tl)
    assert client.monitor("frobnicate 3") == "unknown monitor command 'frobnicate 3'; try 'monitor help'\n"
    assert client.monitor("info") == "unknown monitor command 'info'; try 'monitor help'\n"
    assert client.monitor("replay_break") == "error: usage: replay_break ICOUNT\n"
    assert client.monitor("replay_break 1 2") == "error: usage: replay_break ICOUNT\n"
    assert client.monitor("replay_seek x") == "error: bad icount 'x'\n"
    assert client.monitor("replay_seek -5") == "error: bad icount '-5'\n"
    assert client.monitor("info replay now") == "error: usage: info replay\n"
    assert client.ask("qRcmd,zz") == "E01"
    assert tl.icount == 0 and not tl.icount_breaks


# -- Ctrl-C and hang-ups ----------------------------------------------------------------------


def test_ctrl_c_interrupts_a_long_continue(stub):
    tl = FakeTimeline(SPIN)
    client, _ = stub(tl)
    client.send("vCont;c")
    time.sleep(0.3)
    assert tl.icount > 0  # running
    client.sock.sendall(b"\x03")
    assert client.reply() == "T02thread:01;"
    assert client.ask("?") == "T02thread:01;"
    assert client.ask("s") == "T05thread:01;"  # the connection carries on


def test_ctrl_c_right_after_continue_is_not_lost(stub):
    """The Timeline clears pending interrupts when a run starts; the stub repeats the request."""
    tl = FakeTimeline(SPIN)
    start = tl.cont

    def slow_start():
        time.sleep(0.2)  # the 0x03 arrives before the run begins
        return start()
    tl.cont = slow_start
    client, _ = stub(tl)
    client.sock.sendall(frame("c") + b"\x03")
    assert client.byte() == b"+"
    assert client.reply() == "T02thread:01;"


def test_ctrl_c_while_stopped_is_ignored(stub):
    client, _ = stub(FakeTimeline(LINEAR))
    client.sock.sendall(b"\x03")
    assert client.ask("s") == "T05thread:01;"


def test_disconnect_mid_run_ends_the_session(stub):
    tl = FakeTimeline(SPIN)
    client, served = stub(tl)
    client.send("c")
    time.sleep(0.2)
    client.close()
    assert served.ended() == "disconnect"


def test_detach_and_kill_forget_the_sessions_breakpoints(stub):
    tl = FakeTimeline(LINEAR)
    client, served = stub(tl)
    assert client.ask(f"Z0,{CODE + 8:x},1") == "OK" and client.ask(f"Z2,{DATA:x},8") == "OK"
    assert client.monitor("replay_break 2")
    assert client.ask("D") == "OK"
    assert served.ended() == "detach"
    assert not tl.breakpoints and not tl.watchpoints and not tl.icount_breaks

    client, served = stub(tl)
    assert client.ask(f"Z1,{CODE + 8:x},1") == "OK"
    client.send("k")  # no reply to k
    assert served.ended() == "kill" and not tl.breakpoints

    client, served = stub(tl)
    assert client.ask(f"Z0,{CODE + 8:x},1") == "OK"
    client.close()
    assert served.ended() == "disconnect" and not tl.breakpoints


# -- framing ----------------------------------------------------------------------------------


def test_bad_checksum_is_naked_and_resent(stub):
    client, _ = stub(FakeTimeline(LINEAR))
    client.sock.sendall(b"$qC#00")
    assert client.byte() == b"-"
    client.sock.sendall(b"$qC#zz")
    assert client.byte() == b"-"
    assert client.ask("qC") == "QC01"
    client.sock.sendall(b"+++junk")  # stray bytes outside packets are dropped
    assert client.ask("qC") == "QC01"


def test_server_resends_a_naked_reply(stub):
    client, _ = stub(FakeTimeline(LINEAR))
    client.send("qC")
    assert client.reply(ack=b"-") == "QC01"
    assert client.reply() == "QC01"
    assert client.ask("qAttached") == "1"


def test_packets_split_across_segments(stub):
    client, _ = stub(FakeTimeline(LINEAR))
    for part in (b"$q", b"C#", b"b", b"4"):
        client.sock.sendall(part)
        time.sleep(0.02)
    assert client.byte() == b"+" and client.reply() == "QC01"


def test_no_ack_mode(stub):
    client, _ = stub(FakeTimeline(LINEAR))
    assert client.ask("QStartNoAckMode") == "OK"
    client.acks = False
    assert client.ask("qC") == "QC01"
    client.sock.sendall(b"$qC#00")  # no NAK without acks: an error reply instead
    assert client.reply() == "E01"
    assert client.ask("?") == "T05thread:01;"
    assert client.buf == b""  # and no '+' anywhere


@pytest.mark.parametrize("packet", [
    "mzz,4", "m1000", "m1000,4,5", "m,", "M1000,2:0g00", "M1000,1", "X1000:ab", "Xzz,1:a", "X1000,1",
    "X1000,1:}", "p", "pzz",
    "P10", "P10=zz", "Pzz=00", "G12", "Gzz", "Z0,1000", "Z0,zz,1", "z2", "szz", "czz", "S", "Czz",
    "qXfer:features:read:target.xml:zz,10", "qXfer:features:read:target.xml", "qRcmd,abc",
])
def test_malformed_packets_get_error_replies(stub, packet):
    tl = FakeTimeline(LINEAR)
    client, _ = stub(tl)
    assert client.ask(packet).startswith("E")
    assert client.ask("?") == "T05thread:01;" and tl.icount == 0


def test_a_failing_timeline_call_is_an_error_reply(stub, caplog):
    tl = FakeTimeline(LINEAR)

    def broken() -> dict[str, int]:
        raise RuntimeError("emulator bug")
    tl.read_registers = broken
    client, _ = stub(tl)
    assert client.ask("g") == "E01"
    assert client.ask("?") == "T05thread:01;"
    assert "packet 'g' failed" in caplog.text
    caplog.clear()


# -- the real GDB -----------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb is not installed")
def test_real_gdb_accepts_the_stub():
    """Debian's GDB 13 takes the target description, steps, reverse-steps and detaches."""
    tl = FakeTimeline(LINEAR)
    served = Served(tl)  # gdb is the client here
    try:
        out = subprocess.run(
            [shutil.which("gdb"), "-nx", "-batch", "-ex", "set architecture i386:x86-64",
             "-ex", f"target remote 127.0.0.1:{served.server.port}", "-ex", "info registers rip",
             "-ex", "stepi", "-ex", "reverse-stepi", "-ex", "info registers rip"],
            capture_output=True, text=True, timeout=60)
    finally:
        served.server.close()
    text = out.stdout + out.stderr
    assert [line.split() for line in out.stdout.splitlines()] == [
        ["The", "target", "architecture", "is", "set", "to", '"i386:x86-64".'],
        ["0x0000000000001000", "in", "??", "()"],  # connected
        ["rip", "0x1000", "0x1000"],
        ["0x0000000000001004", "in", "??", "()"],  # stepi
        ["0x0000000000001000", "in", "??", "()"],  # reverse-stepi
        ["rip", "0x1000", "0x1000"],
        ["[Inferior", "1", "(Remote", "target)", "detached]"],
    ], text
    # No complaint beyond the one about having no ELF (no "Remote 'g' packet reply is too long").
    assert re.sub(r"warning: No executable has been specified.*?command\.\n", "", out.stderr, flags=re.S) == "", text
    assert served.ended() == "detach" and tl.icount == 0
