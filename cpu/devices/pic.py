"""8259A programmable interrupt controller pair (master 0x20/0x21, slave 0xA0/0xA1).

Edge-triggered as PCs program it: a 0->1 transition on a line sets its request bit. The executor
asks `pending()` between slices and, when the CPU can take it, `acknowledge()` (the INTA cycle)."""
from __future__ import annotations

from typing import Any

from cpu.board import BoardContext


class Pic8259:
    """One chip: IRR/ISR/IMR, the ICW sequence, EOIs and fixed priority."""

    def __init__(self, vector_base: int, is_master: bool) -> None:
        self.is_master = is_master
        self.irr = 0
        self.isr = 0
        self.imr = 0
        self.lines = 0  # current input levels, for edge detection
        self.vector_base = vector_base
        self.init_step = 0  # 0 = operational; 2..4 = next ICW expected
        self.icw4_needed = False
        self.single = False
        self.auto_eoi = False
        self.read_isr = False
        self.cascade = 0

    def set_line(self, line: int, level: int) -> None:
        bit = 1 << line
        if level and not self.lines & bit:
            self.irr |= bit
        self.lines = (self.lines | bit) if level else (self.lines & ~bit)

    def highest(self, bits: int) -> int:
        for i in range(8):
            if bits & (1 << i):
                return i
        return -1

    def pending_line(self) -> int:
        """The highest-priority unmasked request above every in-service line, or -1."""
        req = self.irr & ~self.imr
        if not req:
            return -1
        line = self.highest(req)
        in_service = self.highest(self.isr)
        if in_service != -1 and in_service <= line:
            return -1
        return line

    def ack(self, line: int) -> None:
        bit = 1 << line
        self.irr &= ~bit
        if not self.auto_eoi:
            self.isr |= bit

    def write_command(self, value: int) -> None:
        if value & 0x10:  # ICW1
            self.init_step = 2
            self.icw4_needed = bool(value & 1)
            self.single = bool(value & 2)
            self.imr = self.isr = self.irr = 0
            self.auto_eoi = False
            self.read_isr = False
        elif value & 0x08:  # OCW3
            if value & 0x02:
                self.read_isr = bool(value & 0x01)
        else:  # OCW2
            cmd = value >> 5
            if cmd == 1:  # non-specific EOI
                top = self.highest(self.isr)
                if top != -1:
                    self.isr &= ~(1 << top)
            elif cmd == 3:  # specific EOI
                self.isr &= ~(1 << (value & 7))

    def write_data(self, value: int) -> None:
        if self.init_step == 2:
            self.vector_base = value & 0xF8
            self.init_step = 0 if self.single and not self.icw4_needed else (3 if not self.single else 4)
            if self.init_step == 4 and not self.icw4_needed:
                self.init_step = 0
        elif self.init_step == 3:
            self.cascade = value
            self.init_step = 4 if self.icw4_needed else 0
        elif self.init_step == 4:
            self.auto_eoi = bool(value & 0x02)
            self.init_step = 0
        else:
            self.imr = value

    def read_command(self) -> int:
        return self.isr if self.read_isr else self.irr

    def get_state(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in _CHIP_FIELDS}

    def set_state(self, state: dict[str, Any]) -> None:
        for k in _CHIP_FIELDS:
            setattr(self, k, state[k])


_CHIP_FIELDS = ("irr", "isr", "imr", "lines", "vector_base", "init_step", "icw4_needed", "single",
                "auto_eoi", "read_isr", "cascade")


class Pic8259Pair:
    name = "pic"
    ports = (0x20, 0x21, 0xA0, 0xA1)

    def __init__(self, ctx: BoardContext) -> None:
        self.ctx = ctx
        self.master = Pic8259(0x08, True)
        self.slave = Pic8259(0x70, False)

    def set_irq(self, line: int, level: int) -> None:
        was = self.pending()
        if line < 8:
            self.master.set_line(line, level)
        else:
            self.slave.set_line(line - 8, level)
            self.master.set_line(2, 1 if self.slave.pending_line() != -1 else 0)
        if not was and self.pending():
            self.ctx.kick()

    def _sync_cascade(self) -> None:
        self.master.set_line(2, 1 if self.slave.pending_line() != -1 else 0)

    def pending(self) -> bool:
        return self.master.pending_line() != -1

    def acknowledge(self) -> int:
        """INTA: the vector of the interrupt the CPU takes now (IRR -> ISR)."""
        line = self.master.pending_line()
        if line == -1:
            return self.master.vector_base + 7  # spurious IRQ 7
        self.master.ack(line)
        if line != 2:
            return self.master.vector_base + line
        sline = self.slave.pending_line()
        if sline == -1:
            return self.slave.vector_base + 7
        self.slave.ack(sline)
        self._sync_cascade()
        return self.slave.vector_base + sline

    def io_read(self, port: int, size: int) -> int:
        chip = self.master if port < 0xA0 else self.slave
        return chip.read_command() if port & 1 == 0 else chip.imr

    def io_write(self, port: int, size: int, value: int) -> None:
        chip = self.master if port < 0xA0 else self.slave
        was = self.pending()
        if port & 1 == 0:
            chip.write_command(value & 0xFF)
        else:
            chip.write_data(value & 0xFF)
        self._sync_cascade()
        if not was and self.pending():
            self.ctx.kick()

    def get_state(self) -> dict[str, Any]:
        return {"master": self.master.get_state(), "slave": self.slave.get_state()}

    def set_state(self, state: dict[str, Any]) -> None:
        self.master.set_state(state["master"])
        self.slave.set_state(state["slave"])
