"""Periodic state digests: how replay notices a divergence the moment it can be seen.

Each digest carries the general registers in full (so a mismatch names them), a hash of all other
registers, a hash of all RAM, and the pages written since the previous digest with their hashes
(so a mismatch names the pages)."""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Callable

import xxhash

from replay import log as L
from replay.player import Divergence

if TYPE_CHECKING:
    from replay.seam import SeamCore  # which imports this module

GPR_NAMES = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10",
             "r11", "r12", "r13", "r14", "r15", "rip", "rflags")
_PAGE = struct.Struct("<IQ")


def _pack_gprs(regs: dict[str, int]) -> bytes:
    out = bytearray()
    for name in GPR_NAMES:
        L._put_varint(out, regs[name])
    return bytes(out)


def _unpack_gprs(data: bytes) -> dict[str, int]:
    out, pos = {}, 0
    for name in GPR_NAMES:
        out[name], pos = L._get_varint(data, pos)
    return out


def unpack_pages(data: bytes) -> dict[int, int]:
    """A digest's pages: (u32 page, u64 hash) each, the hash the first 8 bytes of the page's
    content hash read little-endian (0: a zero page); cpu.pagetrack packs them."""
    return {i: h for i, h in _PAGE.iter_unpack(data)}


class OutputDigest:
    """A hash of the guest's output (serial, debugcon) since the last state digest, which the
    digest carries after the other registers' hash: a changed input that changes what the guest
    prints is a divergence even where the state converges again. `whole` is false when the run
    jumped in the interval (a snapshot restored, a replay started mid-run): a replay does not
    check a hash of part of the output."""

    def __init__(self) -> None:
        self.hash = xxhash.xxh3_64()
        self.whole = True

    def counted(self, out: Callable[[bytes], None]) -> Callable[[bytes], None]:
        """`out`, hashing what passes through it."""
        def write(data: bytes) -> None:
            self.hash.update(data)
            out(data)
        return write

    def take(self) -> tuple[bytes, bool]:
        """(the hash of the interval's output, whether it is all of it); a new interval starts."""
        taken = self.hash.digest(), self.whole
        self.hash, self.whole = xxhash.xxh3_64(), True
        return taken


class DigestCheck:
    def __init__(self, core: SeamCore) -> None:
        self.core = core

    def check(self, regs: dict[str, int], other_hash: bytes, ram_hash: bytes,
              changed: bytes, page_hash: Callable[[int], int],
              output: tuple[bytes, bool]) -> None:
        """Record: log the digest. Replay: compare with the logged one; raise Divergence naming
        the registers and pages that differ. `changed`: the pages written since the last digest,
        packed as `unpack_pages` reads them; `page_hash(page)` is the replay's 64-bit page hash;
        `output` is OutputDigest.take()'s (logs written before it have no output hash)."""
        gprs = _pack_gprs(regs)
        if not self.core.replaying:
            self.core.log(L.DIGEST, gprs, other_hash + output[0], ram_hash, changed)
            return
        rec = self.core.take(L.DIGEST)
        logged_gprs, logged_other, logged_ram, logged_pages = rec.fields
        logged_other, logged_output = logged_other[:len(other_hash)], logged_other[len(other_hash):]
        output_differs = bool(logged_output) and output[1] and logged_output != output[0]
        if (logged_gprs, logged_other, logged_ram) == (gprs, other_hash, ram_hash) and not output_differs:
            return
        try:
            then = _unpack_gprs(logged_gprs)
            recorded = unpack_pages(logged_pages)
        except (L.LogError, struct.error):  # different anyway; a damaged log cannot say how
            raise Divergence(self.core.now(), "the recording's state digest here cannot be read") from None
        what = [f"{n} {then[n]:#x} -> {regs[n]:#x}" for n in GPR_NAMES if then[n] != regs[n]]
        if logged_other != other_hash:
            what.append("other registers (segment, control, x87/SSE or MSR state)")
        if logged_ram != ram_hash:
            ours = unpack_pages(changed)
            pages = sorted(p for p in set(recorded) | set(ours)
                           if recorded.get(p, -1) != page_hash(p))
            shown = ", ".join(f"{p * 4096:#x}" for p in pages[:16]) + (" ..." if len(pages) > 16 else "")
            what.append(f"RAM pages {shown}" if pages else "RAM (pages written before the last snapshot)")
        if output_differs:
            what.append("the guest's output (serial, debugcon) since the previous digest")
        raise Divergence(self.core.now(), "; ".join(what))
