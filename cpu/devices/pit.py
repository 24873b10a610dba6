"""8254 programmable interval timer at 0x40-0x43, counting at 1,193,182 Hz of virtual time.

Channel 0 drives IRQ 0 in modes 0 (one shot), 2 (rate generator) and 3 (square wave: one IRQ
edge per period); modes 1, 4 and 5 behave as mode 0. Period ends are computed from the load time
with exact integer arithmetic, so ticks never drift; each becomes a timer deadline in icounts.
Channels 1 and 2 count but interrupt nothing. Counter values the guest reads go through the time
seam (they are logged while recording). The read-back command is not implemented."""
from __future__ import annotations

from typing import Any, Optional

from cpu.board import BoardContext

PIT_HZ = 1_193_182
NS = 1_000_000_000
ACCESS_LATCH, ACCESS_LOW, ACCESS_HIGH, ACCESS_WORD = 0, 1, 2, 3


class Channel:
    """One counter: its programming, the byte sequencing of its port, and when it was loaded."""

    FIELDS = ("mode", "access", "reload", "low_pending", "write_low", "latched", "read_high",
              "start_ns", "ticks", "loaded")

    def __init__(self) -> None:
        self.mode = 0
        self.access = ACCESS_WORD
        self.reload = 0x10000  # the count, with 0 written meaning 65536
        self.low_pending = False  # lobyte/hibyte write: low byte written, high expected
        self.write_low = 0
        self.latched: Optional[int] = None  # a value held for reading (latch command, or a word read)
        self.read_high = False  # lobyte/hibyte read: low byte read, high next
        self.start_ns = 0  # virtual time of the last count load
        self.ticks = 0  # periods ended since the load
        self.loaded = False

    def count_at(self, ns: int) -> int:
        """The live 16-bit counter value at virtual time `ns`."""
        if not self.loaded:
            return 0
        elapsed = (ns - self.start_ns) * PIT_HZ // NS  # input clocks since the load
        if self.mode == 2:  # reload, reload-1, ..., 1
            value = self.reload - elapsed % self.reload
        elif self.mode == 3:  # counts by two, through each half period
            value = self.reload - (2 * elapsed) % self.reload
        else:  # counts down once through zero, then keeps wrapping
            value = self.reload - elapsed
        return value & 0xFFFF

    def period_end_ns(self, k: int) -> int:
        """Virtual time (rounded up to a whole ns) at which the k-th period since the load ends."""
        return self.start_ns - (-k * self.reload * NS) // PIT_HZ

    def get_state(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.FIELDS}

    def set_state(self, state: dict[str, Any]) -> None:
        for k in self.FIELDS:
            setattr(self, k, state[k])


class Pit8254:
    name = "pit"
    ports = (0x40, 0x41, 0x42, 0x43)

    def __init__(self, ctx: BoardContext) -> None:
        self.ctx = ctx
        self.channels = [Channel(), Channel(), Channel()]
        self.timer = ctx.timers.new("pit0", self._period_end)

    def _arm_next(self) -> None:
        ch = self.channels[0]
        self.timer.arm(self.ctx.icount_at_ns(ch.period_end_ns(ch.ticks + 1)))

    def _period_end(self, when: int) -> None:
        ch = self.channels[0]
        ch.ticks += 1
        self.ctx.set_irq(0, 1)
        self.ctx.set_irq(0, 0)
        if ch.mode in (2, 3):
            self._arm_next()

    def _load(self, index: int, value: int) -> None:
        ch = self.channels[index]
        ch.reload = value or 0x10000
        ch.start_ns = self.ctx.ns(self.ctx.now())
        ch.ticks = 0
        ch.loaded = True
        if index == 0:
            self._arm_next()

    def _value(self, index: int) -> int:
        ch = self.channels[index]
        return self.ctx.rr.time.read("pit", lambda: ch.count_at(self.ctx.ns(self.ctx.now())))

    def _control(self, value: int) -> None:
        index = value >> 6
        if index == 3:
            return  # read-back command: not implemented
        ch = self.channels[index]
        access = (value >> 4) & 3
        if access == ACCESS_LATCH:
            if ch.latched is None:  # a second latch before the first is read is ignored
                ch.latched = self._value(index)
                ch.read_high = False
            return
        mode = (value >> 1) & 7
        ch.access = access
        ch.mode = mode - 4 if mode in (6, 7) else mode  # 6 and 7 are aliases of 2 and 3
        ch.low_pending = ch.read_high = ch.loaded = False
        ch.latched = None
        if index == 0:
            self.timer.cancel()  # counting stops until a new count is written

    def io_write(self, port: int, size: int, value: int) -> None:
        value &= 0xFF
        if port == 0x43:
            self._control(value)
            return
        index = port - 0x40
        ch = self.channels[index]
        if ch.access == ACCESS_LOW:
            self._load(index, value)
        elif ch.access == ACCESS_HIGH:
            self._load(index, value << 8)
        elif not ch.low_pending:
            ch.write_low = value
            ch.low_pending = True
        else:
            ch.low_pending = False
            self._load(index, ch.write_low | (value << 8))

    def io_read(self, port: int, size: int) -> int:
        if port == 0x43:
            return 0xFF
        index = port - 0x40
        ch = self.channels[index]
        value = ch.latched if ch.latched is not None else self._value(index)
        if ch.access == ACCESS_LOW:
            ch.latched = None
            return value & 0xFF
        if ch.access == ACCESS_HIGH:
            ch.latched = None
            return value >> 8
        if not ch.read_high:
            ch.read_high = True
            ch.latched = value  # the high byte comes from the same reading
            return value & 0xFF
        ch.read_high = False
        ch.latched = None
        return value >> 8

    def get_state(self) -> dict[str, Any]:
        return {"channels": [c.get_state() for c in self.channels], "deadline": self.timer.deadline}

    def set_state(self, state: dict[str, Any]) -> None:
        for c, s in zip(self.channels, state["channels"]):
            c.set_state(s)
        # Assigned, not armed: the machine's clock may not be back at the snapshot's icount yet,
        # and arm() would move a deadline in the past to "now".
        self.timer.deadline = state["deadline"]
