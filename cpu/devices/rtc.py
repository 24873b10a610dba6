"""MC146818 RTC/CMOS at 0x70 (index) / 0x71 (data): the host's wall clock (UTC), BCD by default.

Every clock register or status-A value the guest reads passes through the time seam, so a
replay sees exactly the times the recording saw."""
from __future__ import annotations

import time
from typing import Any, Callable

from cpu.board import BoardContext

CLOCK_REGS = {0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32, 0x0A}


class Rtc146818:
    name = "rtc"
    ports = (0x70, 0x71)

    def __init__(self, ctx: BoardContext, wallclock: Callable[[], float] = time.time) -> None:
        self.ctx = ctx
        self.wallclock = wallclock
        self.index = 0
        self.cmos = bytearray(128)
        self.cmos[0x0A] = 0x26
        self.cmos[0x0B] = 0x02  # 24-hour, BCD
        self.cmos[0x0D] = 0x80  # valid RAM and time

    def _host_value(self, reg: int) -> int:
        now = self.wallclock()
        if reg == 0x0A:
            # UIP is set during the last 244 us of each second, as on the real chip.
            return (self.cmos[0x0A] & 0x7F) | (0x80 if now % 1 > 1 - 244e-6 else 0)
        t = time.gmtime(now)
        binary = self.cmos[0x0B] & 0x04
        h24 = self.cmos[0x0B] & 0x02
        values = {0x00: t.tm_sec, 0x02: t.tm_min, 0x04: t.tm_hour, 0x06: (t.tm_wday + 1) % 7 + 1,
                  0x07: t.tm_mday, 0x08: t.tm_mon, 0x09: t.tm_year % 100, 0x32: t.tm_year // 100}
        value = values[reg]
        pm = 0
        if reg == 0x04 and not h24:
            pm = 0x80 if value >= 12 else 0
            value = value % 12 or 12
        if not binary:
            value = (value // 10) << 4 | value % 10
        return value | pm

    def io_write(self, port: int, size: int, value: int) -> None:
        if port == 0x70:
            self.index = value & 0x7F
        elif self.index not in (0x0C, 0x0D) and self.index not in CLOCK_REGS - {0x0A}:
            self.cmos[self.index] = value & 0xFF

    def io_read(self, port: int, size: int) -> int:
        if port == 0x70:
            return 0xFF
        reg = self.index
        if reg in CLOCK_REGS:
            return self.ctx.rr.time.read("rtc", lambda: self._host_value(reg))
        if reg == 0x0C:
            return 0
        return self.cmos[reg]

    def get_state(self) -> dict[str, Any]:
        return {"index": self.index, "cmos": self.cmos.hex()}

    def set_state(self, state: dict[str, Any]) -> None:
        self.index = state["index"]
        self.cmos = bytearray.fromhex(state["cmos"])
