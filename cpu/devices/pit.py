"""8254 programmable interval timer at 0x40-0x43, counting at 1,193,182 Hz of virtual time.

Channel 0 drives IRQ 0 in modes 0 (one shot), 2 (rate generator) and 3 (square wave: one IRQ
edge per period). Period ends are computed from the load time with exact integer arithmetic, so
ticks never drift; each becomes a timer deadline in icounts. Counter values the guest reads go
through the time seam (they are logged while recording)."""
from __future__ import annotations

from typing import Any, Optional

from cpu.board import BoardContext

PIT_HZ = 1_193_182
NS = 1_000_000_000


class Channel:
    FIELDS = ("mode", "access", "reload", "low_pending", "write_low", "latched", "read_high",
              "start_ns", "ticks", "loaded")

    def __init__(self) -> None:
        self.mode = 0
        self.access = 3
        self.reload = 0x10000
        self.low_pending = False  # lobyte/hibyte write: low byte written, high expected
        self.write_low = 0
        self.latched: Optional[int] = None
        self.read_high = False
        self.start_ns = 0
        self.ticks = 0
        self.loaded = False

    def count_at(self, ns: int) -> int:
        """The live counter value `ns` after the load."""
        if not self.loaded:
            return 0
        elapsed = (ns - self.start_ns) * PIT_HZ // NS
        if self.mode in (2, 3):
            if self.mode == 3:
                return (self.reload - (2 * elapsed) % self.reload) & 0xFFFE or self.reload & 0xFFFF
            return self.reload - elapsed % self.reload
        return (self.reload - elapsed) & 0xFFFF

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

    def _period_ns(self, ch: Channel, k: int) -> int:
        return ch.start_ns + (k * ch.reload * NS) // PIT_HZ

    def _arm_next(self) -> None:
        ch = self.channels[0]
        self.timer.arm(self.ctx.icount_at_ns(self._period_ns(ch, ch.ticks + 1)))

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
            self.timer.cancel()
            self._arm_next()

    def _value(self, index: int) -> int:
        ch = self.channels[index]
        return self.ctx.rr.time.read("pit", lambda: ch.count_at(self.ctx.ns(self.ctx.now())))

    def io_write(self, port: int, size: int, value: int) -> None:
        value &= 0xFF
        if port == 0x43:
            index = value >> 6
            if index == 3:
                return  # read-back command: not supported, ignored
            ch = self.channels[index]
            access = (value >> 4) & 3
            if access == 0:
                if ch.latched is None:
                    ch.latched = self._value(index)
                    ch.read_high = False
                return
            ch.access = access
            mode = (value >> 1) & 7
            ch.mode = mode - 4 if mode in (6, 7) else mode
            ch.low_pending = False
            ch.latched = None
            ch.read_high = False
            if index == 0:
                self.timer.cancel()
            return
        index = port - 0x40
        ch = self.channels[index]
        if ch.access == 1:
            self._load(index, value)
        elif ch.access == 2:
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
        if ch.access == 1:
            ch.latched = None
            return value & 0xFF
        if ch.access == 2:
            ch.latched = None
            return (value >> 8) & 0xFF
        if not ch.read_high:
            ch.read_high = True
            if ch.latched is None:
                ch.latched = value  # the high byte must come from the same reading
            return value & 0xFF
        ch.read_high = False
        ch.latched = None
        return (value >> 8) & 0xFF

    def get_state(self) -> dict[str, Any]:
        return {"channels": [c.get_state() for c in self.channels], "deadline": self.timer.deadline}

    def set_state(self, state: dict[str, Any]) -> None:
        for c, s in zip(self.channels, state["channels"]):
            c.set_state(s)
        self.timer.deadline = state["deadline"]
