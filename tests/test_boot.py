"""Booting: the CPU state a guest starts in (floating point at the first instruction), the boot
formats QEMU's -kernel takes, and bad kernels as one line each.

Expected values are computed here (Python's IEEE doubles) or read from the guests' ELFs."""
from __future__ import annotations

import re
import struct
import subprocess
import sys

from tests.conftest import ROOT, run_urr
from tests.test_machine import lines, record_and_replay


def _bits(d: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", d))[0]


def test_sse_and_x87_work_from_the_first_instruction(guests, tmp_path):
    """guests/fpu.c is built with plain -O2 (SSE doubles, a vectorised loop) and uses the x87."""
    rec, _ = record_and_replay(tmp_path, 7, "-kernel", guests["fpu"])
    values = dict(re.fullmatch(r"fpu (\S+) (0x[0-9a-f]+)", line).groups() for line in lines(rec))
    basel = 0.0
    for k in range(1, 1001):
        basel += 1.0 / (float(k) * k)
    x = 1.0
    for _ in range(6):
        x = (x + 2.0 / x) / 2.0
    assert {k: int(v, 16) for k, v in values.items()} == {
        "basel": _bits(basel), "newton": _bits(x), "inf": _bits(float("inf")), "x87": _bits(1.0),
        "vec": sum(i * i for i in range(4096)) & 0xFFFFFFFF}
    assert rec.status == 33


def test_fpu_guest_snapshots_verify(guests, tmp_path):
    """Snapshots of a guest with live SSE/x87 state restore to the same state (urr-snap verify)."""
    rr = str(tmp_path / "fpu.rr")
    rec = run_urr("-kernel", guests["fpu"], "-snapshots", "1ms:1s,1ms",
                  "-icount", f"shift=7,rr=record,rrfile={rr},rrsnapshot=init")
    assert rec.status == 33, rec.err
    verify = subprocess.run([sys.executable, "-m", "snapshots.cli", "verify", rr], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert verify.returncode == 0, verify.stdout + verify.stderr
