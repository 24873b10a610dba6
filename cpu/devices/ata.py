"""ATA PIO disk on the primary channel: 0x1F0-0x1F7 and 0x3F6, IRQ 14, LBA28, master only.

Commands: IDENTIFY DEVICE, READ SECTORS, WRITE SECTORS, FLUSH CACHE; anything else aborts.
Each command keeps BSY for a fixed virtual delay (BUSY_ICOUNTS), then raises DRQ or completes
and interrupts (unless nIEN). WRITE SECTORS asks for its first sector at once, without an
interrupt, as drives do; each written sector then takes the delay. Commands written while the
drive is busy or mid-transfer are ignored (as QEMU does). The data a guest reads passes through
the block seam one sector at a time (`block.read(lba, 1, ...)`): logged when recording, supplied
by the log in replay. nIEN holds INTRQ low and drops an interrupt raised meanwhile (as QEMU)."""
from __future__ import annotations

import struct
from typing import Any, Optional

from cpu.board import BoardContext
from cpu.disk import SECTOR, DiskImage

BUSY_ICOUNTS = 2000
BSY, DRDY, DF, DSC, DRQ, ERR = 0x80, 0x40, 0x20, 0x10, 0x08, 0x01
ABRT, IDNF = 0x04, 0x10
NIEN, SRST = 0x02, 0x04
READS, WRITES = (0x20, 0x21), (0x30, 0x31)
IDENTIFY, FLUSH = 0xEC, 0xE7


def identify_block(sectors: int) -> bytes:
    """The 256 IDENTIFY DEVICE words of an LBA28 disk of `sectors` sectors."""
    words = [0] * 256
    words[0] = 0x0040  # fixed disk
    words[1], words[3], words[6] = 16383, 16, 63
    def text(start: int, n: int, s: str) -> None:
        s = s.ljust(n * 2)
        for i in range(n):
            words[start + i] = (ord(s[2 * i]) << 8) | ord(s[2 * i + 1])
    text(10, 10, "URR0000001")
    text(23, 4, "1.0")
    text(27, 20, "URR HARDDISK")
    words[47] = 0x8001
    words[49] = 0x0200  # LBA supported
    words[53] = 0x0001
    capacity = min(sectors, 0x0FFFFFFF)
    words[60], words[61] = capacity & 0xFFFF, capacity >> 16
    words[80] = 0x007E  # ATA-1..6
    return struct.pack("<256H", *words)


class AtaDisk:
    name = "ata"
    ports = tuple(range(0x1F0, 0x1F8)) + (0x3F6,)
    FIELDS = ("features", "error", "count", "lba", "drive", "status", "control", "command",
              "remaining", "irq_level")

    def __init__(self, ctx: BoardContext, disk: Optional[DiskImage]) -> None:
        self.ctx = ctx
        self.disk = disk
        self.features = self.error = self.count = self.lba = 0
        self.drive = 0xA0
        self.status = DRDY | DSC if disk else 0
        self.control = 0
        self.command = 0
        self.remaining = 0  # sectors left in the current transfer
        self.buffer = bytearray()
        self.pos = 0
        self.irq_level = 0
        self.timer = ctx.timers.new("ata", self._ready)

    # -- register file ------------------------------------------------------------------------

    def _selected(self) -> bool:
        return self.disk is not None and not self.drive & 0x10

    def _irq(self, level: int) -> None:
        level = level if not self.control & NIEN else 0
        if level != self.irq_level:
            self.irq_level = level
            self.ctx.set_irq(14, level)

    def io_read(self, port: int, size: int) -> int:
        if port == 0x1F0:
            return self._read_data(size)
        if not self._selected():
            return 0
        if port == 0x1F7:
            self._irq(0)  # reading the status acknowledges INTRQ
            return self.status
        if port == 0x3F6:  # alternate status: no acknowledge
            return self.status
        if port == 0x1F1:
            return self.error
        if port == 0x1F2:
            return self.count
        if port == 0x1F6:
            return self.drive
        return (self.lba >> (8 * (port - 0x1F3))) & 0xFF  # 0x1F3-0x1F5: LBA bits 0-23

    def io_write(self, port: int, size: int, value: int) -> None:
        if port == 0x1F0:
            self._write_data(size, value)
            return
        value &= 0xFF
        if port == 0x3F6:
            if value & SRST and not self.control & SRST:
                self._reset()
            self.control = value
            if value & NIEN:
                self._irq(0)
        elif port == 0x1F1:
            self.features = value
        elif port == 0x1F2:
            self.count = value
        elif port == 0x1F3:
            self.lba = (self.lba & ~0xFF) | value
        elif port == 0x1F4:
            self.lba = (self.lba & ~0xFF00) | (value << 8)
        elif port == 0x1F5:
            self.lba = (self.lba & ~0xFF0000) | (value << 16)
        elif port == 0x1F6:
            self.drive = value
            self.lba = (self.lba & 0xFFFFFF) | ((value & 0x0F) << 24)
        elif port == 0x1F7 and self._selected():
            self._start(value)

    def _reset(self) -> None:
        """Software reset: abandon any command and show the ATA disk signature."""
        self.timer.cancel()
        self.status = DRDY | DSC
        self.error = 1  # diagnostics passed
        self.count, self.lba = 1, 1
        self.drive &= 0xF0
        self.remaining = 0
        self.buffer = bytearray()
        self.pos = 0
        self._irq(0)

    # -- commands -----------------------------------------------------------------------------

    def _start(self, command: int) -> None:
        if self.status & (BSY | DRQ):
            return
        self._irq(0)
        self.command = command
        self.error = 0
        self.buffer = bytearray()
        self.pos = 0
        if command in READS + WRITES:
            n = self.count or 256
            if not self.drive & 0x40:  # CHS addressing is not supported
                self._fail(ABRT)
                return
            if self.lba + n > self.disk.sectors:
                self._fail(IDNF)
                return
            self.remaining = n
        elif command not in (IDENTIFY, FLUSH):
            self._fail(ABRT)
            return
        if command in WRITES:  # the host fills the first sector without waiting
            self.status = DRDY | DSC | DRQ
            return
        self._busy()

    def _busy(self) -> None:
        self.status = BSY
        self.timer.arm(self.ctx.now() + BUSY_ICOUNTS)

    def _fail(self, error: int) -> None:
        self.error = error
        self.status = DRDY | DSC | ERR
        self._irq(1)

    def _ready(self, when: int) -> None:
        """The busy delay has passed: data is ready (reads) or the command has completed."""
        if self.command == IDENTIFY:
            self._offer(identify_block(self.disk.sectors))
        elif self.command in READS:
            lba = self.lba
            data = self.ctx.rr.block.read(lba, 1, lambda: self.disk.read(lba, 1))
            self._offer(data)
        else:  # FLUSH CACHE, or a WRITE sector committed
            self.status = DRDY | DSC | (DRQ if self.remaining else 0)
            self.buffer = bytearray()
            self.pos = 0
            self._irq(1)

    def _offer(self, data: bytes) -> None:
        self.buffer = bytearray(data)
        self.pos = 0
        self.status = DRDY | DSC | DRQ
        self._irq(1)

    def _read_data(self, size: int) -> int:
        """Data port read (16-bit; a 32-bit read takes two words at once)."""
        if not self.status & DRQ or self.command in WRITES:
            return (1 << (8 * size)) - 1
        value = int.from_bytes(self.buffer[self.pos:self.pos + size], "little")
        self.pos += size
        if self.pos >= len(self.buffer):
            self.status = DRDY | DSC
            if self.command in READS:
                self.remaining -= 1
                self.lba += 1
                if self.remaining:
                    self._busy()
        return value

    def _write_data(self, size: int, value: int) -> None:
        if not self.status & DRQ or self.command not in WRITES:
            return
        self.buffer += (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        if len(self.buffer) >= SECTOR:
            self.disk.write(self.lba, bytes(self.buffer[:SECTOR]))
            self.lba += 1
            self.remaining -= 1
            self._busy()

    def get_state(self) -> dict[str, Any]:
        state = {k: getattr(self, k) for k in self.FIELDS}
        state.update(buffer=self.buffer.hex(), pos=self.pos, deadline=self.timer.deadline)
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        for k in self.FIELDS:
            setattr(self, k, state[k])
        self.buffer = bytearray.fromhex(state["buffer"])
        self.pos = state["pos"]
        # Assigned, not armed: the machine's clock may not be back at the snapshot's icount yet,
        # and arm() would move a deadline in the past to "now".
        self.timer.deadline = state["deadline"]
