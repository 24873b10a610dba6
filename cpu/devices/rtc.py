"""MC146818 RTC/CMOS at 0x70 (index) / 0x71 (data): the host's wall clock (UTC), BCD by default.

Every clock register or status-A value the guest reads passes through the time seam, so a
replay sees exactly the times the recording saw. The time registers follow the host clock and
ignore writes (the guest cannot set the clock); alarms and periodic interrupts are not modelled,
so register C reads 0."""
from __future__ import annotations

import time
from typing import Any, Callable

from cpu.board import BoardContext

TIME_REGS = (0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32)
STATUS_A, STATUS_B, STATUS_C, STATUS_D = 0x0A, 0x0B, 0x0C, 0x0D
B_24H, B_BINARY = 0x02, 0x04


class Rtc146818:
    name = "rtc"
    ports = (0x70, 0x71)

    def __init__(self, ctx: BoardContext, wallclock: Callable[[], float] = time.time) -> None:
        self.ctx = ctx
        self.wallclock = wallclock
        self.index = 0
        self.cmos = bytearray(128)
        self.cmos[STATUS_A] = 0x26  # 32.768 kHz time base, 1.024 kHz rate
        self.cmos[STATUS_B] = B_24H  # 24-hour, BCD
        self.cmos[STATUS_D] = 0x80  # valid RAM and time

    def _host_value(self, reg: int) -> int:
        now = self.wallclock()
        if reg == STATUS_A:
            # UIP is set during the last 244 us of each second, as on the real chip.
            return (self.cmos[STATUS_A] & 0x7F) | (0x80 if now % 1 > 1 - 244e-6 else 0)
        t = time.gmtime(now)
        binary = self.cmos[STATUS_B] & B_BINARY
        h24 = self.cmos[STATUS_B] & B_24H
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
            self.index = value & 0x7F  # bit 7 masks NMIs: there are none to mask
        elif self.index not in TIME_REGS + (STATUS_C, STATUS_D):
            self.cmos[self.index] = value & 0xFF  # status A (UIP aside), B, and CMOS RAM

    def io_read(self, port: int, size: int) -> int:
        if port == 0x70:
            return 0xFF
        reg = self.index
        if reg in TIME_REGS or reg == STATUS_A:
            return self.ctx.rr.time.read("rtc", lambda: self._host_value(reg))
        if reg == STATUS_C:
            return 0
        return self.cmos[reg]

    def get_state(self) -> dict[str, Any]:
        return {"index": self.index, "cmos": self.cmos.hex()}

    def set_state(self, state: dict[str, Any]) -> None:
        self.index = state["index"]
        self.cmos = bytearray.fromhex(state["cmos"])
