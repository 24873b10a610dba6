"""Fuzzing the GDB stub: random and hostile packets against a real replay, as a raw client.

    python bench/stubfuzz.py --seed 1 --packets 300 [--json]

One process serves a replay of `hello` (from its snapshot `init`, a catalog beside it) with
debugger.gdbstub on an ephemeral port and sends it packets drawn from one random.Random(seed):
well-formed requests with hostile operands (addresses past RAM, lengths of 2^64, registers and
values of every width, writes that take the replay off its recording, seeks and reverse steps
after them, breakpoints and watchpoints anywhere, monitor commands with random words), bytes of
garbage inside and outside packets, bad checksums, Ctrl-C, detach and kill (then it connects
again). Every packet must get its reply (an error reply is fine) within REPLY_TIMEOUT; the stub
must log no unexpected exception (its one-line `urr: gdb stub: packet ... failed`) and no
exception may escape it. bench/soak.py runs batches of this in child processes (`--stub N`), so a
crash of the emulator counts as a failure of its seed instead of ending the soak."""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from debugger.gdbstub import GdbServer  # noqa: E402
from debugger.tdesc import REGISTERS  # noqa: E402
from debugger.timeline import Timeline  # noqa: E402

GUEST = os.path.join(ROOT, "guests", "build", "hello.elf")
RAM = 16 << 20
REPLY_TIMEOUT = 60.0
MONITOR_WORDS = ["info", "replay", "snapshots", "replay_break", "replay_delete_break", "replay_seek",
                 "step_interrupts", "on", "off", "help", "-f", "frobnicate", "0", "1", "-1", "0x10",
                 "99999999999999999999", "abc", ""]


@dataclass
class Outcome:
    packets: int = 0
    replies: dict[str, int] = field(default_factory=dict)  # first character of the reply -> count
    reconnects: int = 0
    unexpected: list[str] = field(default_factory=list)  # logged by the stub: its own bugs
    failures: list[str] = field(default_factory=list)  # a hang, a dropped connection, a traceback


class _Logged(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.ERROR)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record.getMessage()[:300])


def _checksum(body: bytes) -> bytes:
    return b"%02x" % (sum(body) & 0xFF)


class _Client:
    """A raw connection that acknowledges every packet (ack mode throughout)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=REPLY_TIMEOUT)
        self.buf = b""

    def _more(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the stub closed the connection")
        self.buf += data

    def _packet(self) -> str:
        while True:
            start = self.buf.find(b"$")
            end = self.buf.find(b"#", start) if start >= 0 else -1
            if start >= 0 and end >= 0 and len(self.buf) >= end + 3:
                body = self.buf[start + 1:end]
                self.buf = self.buf[end + 3:]
                self.sock.sendall(b"+")
                return body.decode("latin-1")
            self._more()

    def exchange(self, body: bytes, good: bool = True) -> Optional[str]:
        """Send one packet; its final reply (console O packets skipped), "-" for a NAK."""
        self.sock.sendall(b"$" + body + b"#" + (_checksum(body) if good else b"zz"))
        while True:
            while not self.buf:
                self._more()
            if self.buf[:1] == b"-":
                self.buf = self.buf[1:]
                return "-"
            if self.buf[:1] != b"$":
                self.buf = self.buf[1:]  # the ack
                continue
            reply = self._packet()
            if not (reply.startswith("O") and reply != "OK"):
                return reply

    def close(self) -> None:
        self.sock.close()


def _hexnum(rng: random.Random) -> str:
    return rng.choice(["0", "1", "ff", "1000", "100000", f"{rng.randrange(RAM):x}", f"{RAM - 1:x}",
                       f"{RAM:x}", "ffffffffffffffff", "10000000000000000", "-1", "zz", ""])


def _register_value(rng: random.Random, size: int) -> str:
    return rng.choice([bytes(size), rng.randbytes(size), b"\xff" * size, rng.randbytes(max(0, size - 1)),
                       (0x2B).to_bytes(size, "little") if size >= 2 else b"\x2b"]).hex()


def packet(rng: random.Random, branch: str) -> tuple[bytes, bool]:
    """One packet body (no '$' or '#') and whether its checksum is right; a branch goes into
    the file `branch`."""
    kind = rng.choice(["m", "m", "M", "X", "g", "G", "p", "P", "P", "s", "c", "bs", "bc", "Z", "z",
                       "vCont", "qRcmd", "qRcmd", "qXfer", "q", "garbage", "?", "H", "T", "S", "C",
                       "qSupported", "D", "k"])
    regnum = rng.randrange(len(REGISTERS) + 3)
    size = REGISTERS[regnum].size if regnum < len(REGISTERS) else rng.choice([1, 4, 8])
    text = {
        "m": lambda: f"m{_hexnum(rng)},{_hexnum(rng)}",
        "M": lambda: f"M{_hexnum(rng)},{rng.choice(['1', '4', '8', '0', '100'])}:{rng.randbytes(rng.choice([1, 4, 8, 0])).hex()}",
        "X": lambda: f"X{_hexnum(rng)},{rng.choice(['0', '1', '4'])}:",
        "g": lambda: "g",
        "G": lambda: "G" + rng.choice([rng.randbytes(rng.randrange(700)).hex(), "zz"]),
        "p": lambda: f"p{regnum:x}",
        "P": lambda: f"P{regnum:x}={_register_value(rng, size)}",
        "s": lambda: rng.choice(["s", f"s{_hexnum(rng)}"]),
        "c": lambda: rng.choice(["c", f"c{_hexnum(rng)}"]),
        "bs": lambda: "bs", "bc": lambda: "bc",
        "Z": lambda: f"Z{rng.choice('012345')},{_hexnum(rng)},{rng.choice(['1', '8', '0', 'ffff'])}"
                     + rng.choice(["", ";X2,2001", ";X1,zz", ";"]),
        "z": lambda: f"z{rng.choice('0123')},{_hexnum(rng)},{rng.choice(['1', '8'])}",
        "vCont": lambda: "vCont" + rng.choice([";c", ";s", ";r100000,100100", ";r10,5", ";t", "", ";C05", ";S5", "?"]),
        "qRcmd": lambda: "qRcmd," + _monitor(rng, branch).encode().hex(),
        "qXfer": lambda: "qXfer:features:read:" + rng.choice(["target.xml", "x.xml", ""]) + f":{_hexnum(rng)},{_hexnum(rng)}",
        "q": lambda: rng.choice(["qC", "qAttached", "qfThreadInfo", "qsThreadInfo", "qOffsets", "qTStatus"]),
        "garbage": lambda: rng.randbytes(rng.randrange(1, 64)).decode("latin-1"),
        "?": lambda: "?", "H": lambda: "Hg0", "T": lambda: "T1",
        "S": lambda: f"S{rng.choice(['05', 'zz', ''])}", "C": lambda: f"C{rng.choice(['05', 'zz', ''])}",
        "qSupported": lambda: "qSupported:" + rng.choice(["swbreak+", "error-message+;swbreak+", ""]),
        "D": lambda: "D", "k": lambda: "k",
    }[kind]()
    body = text.encode("latin-1").replace(b"$", b"").replace(b"#", b"")
    return body, rng.random() > 0.03


def _monitor(rng: random.Random, branch: str) -> str:
    if rng.random() < 0.02:  # rarely: leave the replay, record from here (into `branch`)
        return f"replay_branch -f {branch}"
    if rng.random() < 0.5:
        return f"replay_seek {rng.choice([0, 1, 10, 100, 1000, 5000, 8000, 10**12])}"
    return " ".join(rng.choice(MONITOR_WORDS) for _ in range(rng.randint(0, 3)))


def fuzz(seed: int, packets: int, rrfile: str) -> Outcome:
    """Send `packets` packets drawn from `seed` to a stub serving a replay of `rrfile` (hello)."""
    rng = random.Random(seed)
    outcome = Outcome()
    logger = logging.getLogger("debugger.gdbstub")
    handler = _Logged(outcome.unexpected)
    logger.addHandler(handler)
    logger.propagate = False  # counted here, not printed
    with Timeline.for_replay(rrfile, GUEST, snapshot="init") as tl:
        server = GdbServer(tl, port=0)
        server.listen()
        escaped: list[str] = []
        done = threading.Event()

        def serve() -> None:
            try:
                while not done.is_set():
                    if server.client_waiting(0.1):
                        server.serve_one()
            except Exception:
                escaped.append(traceback.format_exc()[-1500:])
        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        client = _Client(server.port)
        try:
            for n in range(packets):
                body, good = packet(rng, rrfile + ".branch.rr")
                outcome.packets += 1
                if rng.random() < 0.02:
                    client.sock.sendall(rng.choice([b"\x03", b"+", b"-", b"garbage"]))
                ends = good and body[:1] in (b"k", b"D")  # the stub reads k... and D... as k and D
                try:
                    if ends and body[:1] == b"k":  # no reply to a kill
                        client.sock.sendall(b"$" + body + b"#" + _checksum(body))
                        reply = "(none)"
                    else:
                        reply = client.exchange(body, good)
                except (ConnectionError, socket.timeout, OSError) as e:
                    outcome.failures.append(f"seed {seed} packet {n} {body[:60]!r}: {type(e).__name__} {e}")
                    break
                outcome.replies[reply[:1] or "empty"] = outcome.replies.get(reply[:1] or "empty", 0) + 1
                if ends:
                    client.close()
                    time.sleep(0.05)
                    client = _Client(server.port)
                    outcome.reconnects += 1
            else:
                if client.exchange(b"?") is None:
                    outcome.failures.append(f"seed {seed}: no stop reply after the fuzz")
        finally:
            client.close()
            done.set()
            thread.join(REPLY_TIMEOUT)
            if thread.is_alive():
                outcome.failures.append(f"seed {seed}: the stub did not end")
            server.close()
    outcome.failures += [f"seed {seed}: exception escaped the stub: {t}" for t in escaped]
    logger.removeHandler(handler)
    return outcome


def record_base(work: str) -> str:
    """A recording of hello (snapshot init) to fuzz against."""
    subprocess.run(["make", "-s", "-C", os.path.join(ROOT, "guests")], check=True, capture_output=True)
    rr = os.path.join(work, "hello.rr")
    rec = subprocess.run([sys.executable, "-m", "urr", "-display", "none", "-serial", "none", "-kernel", GUEST,
                          "-icount", f"shift=7,rr=record,rrfile={rr},rrsnapshot=init"], cwd=ROOT,
                         capture_output=True, text=True)
    if rec.returncode != 33:  # hello's own status
        raise RuntimeError(f"recording hello failed: {rec.stderr}")
    return rr


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--packets", type=int, default=300)
    ap.add_argument("--rrfile", help="a recording of hello with snapshot init (else one is made)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="urr-stubfuzz-") as work:
        rr = args.rrfile or record_base(work)
        outcome = fuzz(args.seed, args.packets, rr)
    result = {"packets": outcome.packets, "replies": outcome.replies, "reconnects": outcome.reconnects,
              "unexpected": outcome.unexpected, "failures": outcome.failures}
    print(json.dumps(result) if args.json else json.dumps(result, indent=1))
    return 1 if outcome.unexpected or outcome.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
