"""The GDB remote serial protocol's wire on one connection: the `-gdb tcp:HOST:PORT` address,
packet framing (checksums, +/- acks until no-ack mode, escapes), the hex fields packets carry, and
GDB's Ctrl-C while the target runs. What the packets mean is debugger.gdbstub's concern.
"""
from __future__ import annotations

import re
import select
import socket
import time
from typing import TYPE_CHECKING, Callable, Optional

if TYPE_CHECKING:
    from debugger.timeline import Stop, Timeline

NAK_RETRIES = 5
SPIN_S = 0.001  # how long a wait for GDB polls before it sleeps (see Wire._recv_soon)
_ESCAPED = b"$#}*"  # bytes a binary reply must escape ('*' would start a run-length code)


class Disconnected(Exception):
    """GDB went away; ends the session."""


def parse_gdb_address(spec: str) -> tuple[str, int]:
    """(host, port) from QEMU's `-gdb tcp:[HOST]:PORT` syntax; HOST defaults to 127.0.0.1."""
    usage = f"-gdb {spec!r}: expected tcp:[HOST]:PORT, e.g. tcp::1234 or tcp:0.0.0.0:5000"
    if not spec.startswith("tcp:"):
        raise ValueError(usage)
    host, colon, port = spec[4:].rpartition(":")
    if not colon or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(usage)
    if host.startswith("[") and host.endswith("]"):  # tcp:[::1]:1234
        host = host[1:-1]
    return host or "127.0.0.1", int(port)


def checksum(body: bytes) -> int:
    """A packet's checksum: the sum of its body's bytes, modulo 256."""
    return sum(body) & 0xFF


def escape(data: bytes) -> bytes:
    """Binary data as a packet may carry it (`}` and the byte xor 0x20 for the framing bytes)."""
    out = bytearray()
    for b in data:
        out += bytes((0x7D, b ^ 0x20)) if b in _ESCAPED else bytes((b,))
    return bytes(out)


def unescape(data: bytes) -> bytes:
    """The binary data of an `X` packet, its escapes undone."""
    out, it = bytearray(), iter(data)
    for b in it:
        if b == 0x7D:
            b = next(it, None)
            if b is None:
                raise ValueError("packet ends in an escape")
            b ^= 0x20
        out.append(b)
    return bytes(out)


def hex_int(text: str) -> int:
    """A hex number from a packet; ValueError (-> an E reply) for anything else."""
    if not re.fullmatch(r"[0-9a-fA-F]+", text):
        raise ValueError(f"bad hex number {text!r}")
    return int(text, 16)


def addr_len(text: str) -> tuple[int, int]:
    addr, length = text.split(",")
    return hex_int(addr), hex_int(length)


class Wire:
    """Packet framing on one connection: checksums, +/- acks until QStartNoAckMode, Ctrl-C."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.acks = True
        self.closed = False

    def _recv(self) -> None:
        if self.closed:
            raise Disconnected
        try:
            data = self._recv_soon()
        except OSError:
            data = b""
        if not data:
            self.closed = True
            raise Disconnected
        self.buf += data

    def _recv_soon(self) -> bytes:
        """Bytes from GDB, polling for a short while before sleeping: GDB answers a reply within
        tens of microseconds, and waking from a sleep costs more than that on an idle host."""
        deadline = time.perf_counter() + SPIN_S
        while time.perf_counter() < deadline:
            try:
                return self.sock.recv(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue
        return self.sock.recv(65536)

    def _send_raw(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError:
            self.closed = True
            raise Disconnected from None

    def read_packet(self) -> Optional[bytes]:
        """The next packet's body; None for a bad checksum in no-ack mode (there is no NAK then).

        Bytes outside packets (stray acks, a Ctrl-C that raced a stop) are dropped."""
        while True:
            start = self.buf.find(b"$")
            if start < 0:
                self.buf.clear()
                self._recv()
                continue
            end = self.buf.find(b"#", start)
            if end < 0 or len(self.buf) < end + 3:
                self._recv()
                continue
            body, sent = bytes(self.buf[start + 1:end]), self.buf[end + 1:end + 3].decode("latin-1")
            del self.buf[:end + 3]
            good = bool(re.fullmatch(r"[0-9a-fA-F]{2}", sent)) and int(sent, 16) == checksum(body)
            if not self.acks:
                return body if good else None
            self._send_raw(b"+" if good else b"-")
            if good:
                return body

    def send(self, body: bytes) -> None:
        """Send one packet; in ack mode resend it on '-' (a few times, then let GDB time out)."""
        frame = b"$%s#%02x" % (body, checksum(body))
        for _ in range(NAK_RETRIES):
            self._send_raw(frame)
            if not self.acks or self._acked():
                return

    def _acked(self) -> bool:
        while True:
            while not self.buf:
                self._recv()
            byte = self.buf[0]
            if byte == ord("$"):  # GDB sent its next packet instead: take that as the ack
                return True
            del self.buf[0]
            if byte in b"+-":
                return byte == ord("+")

    def run_watched(self, action: Callable[[], Stop], timeline: Timeline) -> Stop:
        """Run `action` with the timeline asking, wherever it checks for interrupt(), whether GDB
        sent Ctrl-C (0x03) or hung up: the socket is read there without blocking, so a resume
        costs no thread and no polling period. Once asked, every later check says so until the
        action returns (a Timeline clears pending interrupts when a run starts, and one action
        may start several)."""
        requested = b"\x03" in self.buf  # sent right behind the resume packet
        self.buf = self.buf.replace(b"\x03", b"")

        def asked() -> bool:
            nonlocal requested
            if not requested and (self.closed or select.select([self.sock], [], [], 0)[0]):
                try:
                    data = b"" if self.closed else self.sock.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    self.closed = requested = True
                else:
                    requested = b"\x03" in data
                    self.buf += data.replace(b"\x03", b"")
            return requested
        timeline.interrupt_poll = asked
        try:
            return action()
        finally:
            timeline.interrupt_poll = None
