"""16550A UART, COM1 at 0x3F8-0x3FF, IRQ 4 gated by MCR OUT2.

Transmission is instantaneous (THR is always empty again by the next instruction). Received
bytes arrive from the executor between slices (`receive`), never from the host directly, so they
are always at logged icounts. No loopback, no line-status or modem-status interrupts."""
from __future__ import annotations

from typing import Any, Callable

from cpu.board import BoardContext

IER_RDA, IER_THRE = 0x01, 0x02
LSR_DR, LSR_THRE, LSR_TEMT = 0x01, 0x20, 0x40
MCR_OUT2 = 0x08


class Uart16550:
    name = "uart"
    ports = tuple(range(0x3F8, 0x400))
    FIELDS = ("ier", "lcr", "mcr", "scr", "dll", "dlm", "fcr", "thre_pending", "irq_level")

    def __init__(self, ctx: BoardContext, output: Callable[[bytes], None]) -> None:
        self.ctx = ctx
        self.output = output
        self.rx = bytearray()
        self.ier = 0
        self.lcr = 0
        self.mcr = 0
        self.scr = 0
        self.dll = 1
        self.dlm = 0
        self.fcr = 0
        self.thre_pending = False  # the THR-empty interrupt condition
        self.irq_level = 0

    def room(self) -> int:
        """Bytes the receiver can take now: a 16-byte FIFO, or one holding register without it."""
        return max(0, (16 if self.fcr & 1 else 1) - len(self.rx))

    def receive(self, data: bytes) -> None:
        """Host input the executor took (at most `room()` bytes per poll; more is kept anyway)."""
        self.rx += data
        self._update()

    def _source(self) -> int:
        """IIR value for the highest-priority pending interrupt (0x01: none)."""
        if self.ier & IER_RDA and self.rx:
            return 0x04
        if self.ier & IER_THRE and self.thre_pending:
            return 0x02
        return 0x01

    def _update(self) -> None:
        level = 1 if self._source() != 0x01 and self.mcr & MCR_OUT2 else 0
        if level != self.irq_level:
            self.irq_level = level
            self.ctx.set_irq(4, level)

    def io_write(self, port: int, size: int, value: int) -> None:
        reg, value = port - 0x3F8, value & 0xFF
        dlab = self.lcr & 0x80
        if reg == 0 and dlab:
            self.dll = value
        elif reg == 0:
            # Writing THR clears the THR-empty condition (the IRQ line drops); the byte goes out
            # at once and the register is empty again, so the condition returns as a new edge.
            self.thre_pending = False
            self._update()
            self.output(bytes([value]))
            self.thre_pending = True
        elif reg == 1 and dlab:
            self.dlm = value
        elif reg == 1:
            if value & IER_THRE and not self.ier & IER_THRE:
                self.thre_pending = True
            self.ier = value & 0x0F
        elif reg == 2:
            self.fcr = value
            if value & 0x02:
                self.rx.clear()
        elif reg == 3:
            self.lcr = value
        elif reg == 4:
            self.mcr = value & 0x1F
        elif reg == 7:
            self.scr = value
        self._update()

    def io_read(self, port: int, size: int) -> int:
        reg = port - 0x3F8
        dlab = self.lcr & 0x80
        if reg == 0 and dlab:
            return self.dll
        if reg == 0:
            value = self.rx.pop(0) if self.rx else 0
            self._update()
            return value
        if reg == 1:
            return self.dlm if dlab else self.ier
        if reg == 2:
            source = self._source()
            if source == 0x02:
                self.thre_pending = False
                self._update()
            return source | (0xC0 if self.fcr & 1 else 0)
        if reg == 3:
            return self.lcr
        if reg == 4:
            return self.mcr
        if reg == 5:
            return (LSR_DR if self.rx else 0) | LSR_THRE | LSR_TEMT
        if reg == 6:
            return 0xB0  # DCD, DSR, CTS asserted
        return self.scr

    def get_state(self) -> dict[str, Any]:
        state = {k: getattr(self, k) for k in self.FIELDS}
        state["rx"] = self.rx.hex()
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        for k in self.FIELDS:
            setattr(self, k, state[k])
        self.rx = bytearray.fromhex(state["rx"])
