"""8259A programmable interrupt controller pair (master 0x20/0x21, slave 0xA0/0xA1).

Edge-triggered as PCs program it: a 0->1 transition on a line sets its request bit. The executor
asks `pending()` between slices and, when the CPU can take it, `acknowledge()` (the INTA cycle).
Fixed priority only (rotation commands are ignored), no poll command, no special mask mode."""
from __future__ import annotations

from typing import Any

from cpu.board import BoardContext

CASCADE = 2  # the master line the slave's output drives


def lowest_bit(bits: int) -> int:
    """Index of the lowest set bit (the highest priority line), or -1."""
    return (bits & -bits).bit_length() - 1


class Pic8259:
    """One chip: IRR/ISR/IMR, the ICW sequence, EOIs and fixed priority."""

    FIELDS = ("irr", "isr", "imr", "lines", "vector_base", "init_step", "icw4_needed", "single",
              "auto_eoi", "read_isr", "icw3")

    def __init__(self, vector_base: int) -> None:
        self.irr = 0
        self.isr = 0
        self.imr = 0
        self.lines = 0  # current input levels, for edge detection
        self.vector_base = vector_base
        self.init_step = 0  # 0 = operational; 2, 3, 4 = the ICW expected next on the data port
        self.icw4_needed = False
        self.single = False
        self.auto_eoi = False
        self.read_isr = False  # OCW3: the command port reads ISR (else IRR)
        self.icw3 = 0  # master: lines with a slave; slave: its identity (only stored)

    def set_line(self, line: int, level: int) -> None:
        bit = 1 << line
        if level and not self.lines & bit:
            self.irr |= bit
        self.lines = (self.lines | bit) if level else (self.lines & ~bit)

    def pending_line(self) -> int:
        """The highest-priority unmasked request above every in-service line, or -1."""
        line = lowest_bit(self.irr & ~self.imr)
        in_service = lowest_bit(self.isr)
        if line == -1 or (in_service != -1 and in_service <= line):
            return -1
        return line

    def ack(self, line: int) -> None:
        bit = 1 << line
        self.irr &= ~bit
        if not self.auto_eoi:
            self.isr |= bit

    def write_command(self, value: int) -> None:
        if value & 0x10:  # ICW1; the edge detectors keep their levels, as on the real chip
            self.init_step = 2
            self.icw4_needed = bool(value & 0x01)
            self.single = bool(value & 0x02)
            self.imr = self.isr = self.irr = 0
            self.auto_eoi = self.read_isr = False
        elif value & 0x08:  # OCW3
            if value & 0x02:
                self.read_isr = bool(value & 0x01)
        elif value >> 5 == 1:  # OCW2 non-specific EOI
            top = lowest_bit(self.isr)
            if top != -1:
                self.isr &= ~(1 << top)
        elif value >> 5 == 3:  # OCW2 specific EOI
            self.isr &= ~(1 << (value & 7))

    def write_data(self, value: int) -> None:
        if self.init_step == 2:  # ICW2: vector base (the low 3 bits are the line)
            self.vector_base = value & 0xF8
            self.init_step = 3 if not self.single else self._after_icw3()
        elif self.init_step == 3:
            self.icw3 = value
            self.init_step = self._after_icw3()
        elif self.init_step == 4:  # ICW4: 8086 mode is assumed; bit 1 is auto-EOI
            self.auto_eoi = bool(value & 0x02)
            self.init_step = 0
        else:  # OCW1
            self.imr = value

    def _after_icw3(self) -> int:
        return 4 if self.icw4_needed else 0

    def read_command(self) -> int:
        return self.isr if self.read_isr else self.irr

    def get_state(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.FIELDS}

    def set_state(self, state: dict[str, Any]) -> None:
        for k in self.FIELDS:
            setattr(self, k, state[k])


class Pic8259Pair:
    """The PC's two chips, the slave cascaded on master line 2; vectors 0x08/0x70 until the
    guest programs them, as a BIOS leaves them."""

    name = "pic"
    ports = (0x20, 0x21, 0xA0, 0xA1)

    def __init__(self, ctx: BoardContext) -> None:
        self.ctx = ctx
        self.master = Pic8259(0x08)
        self.slave = Pic8259(0x70)

    def set_irq(self, line: int, level: int) -> None:
        """An IRQ input (0-15) changes level."""
        was = self.pending()
        if line < 8:
            self.master.set_line(line, level)
        else:
            self.slave.set_line(line - 8, level)
        self._settle(was)

    def _settle(self, was_pending: bool) -> None:
        """Show the slave's output on the master and kick the executor on a new request.

        The master's cascade request follows the slave's output level (it is not latched as an
        edge), so a slave request that goes away before INTA leaves nothing behind, and one
        still waiting after another was acknowledged is not lost."""
        if self.slave.pending_line() != -1:
            self.master.irr |= 1 << CASCADE
        else:
            self.master.irr &= ~(1 << CASCADE)
        if not was_pending and self.pending():
            self.ctx.kick()

    def pending(self) -> bool:
        return self.master.pending_line() != -1

    def acknowledge(self) -> int:
        """INTA: the vector of the interrupt the CPU takes now (IRR -> ISR on both chips).

        With nothing to deliver the master answers IRQ 7 without setting its in-service bit, as
        a real 8259A does for a request that went away. (The cascade request exists only while
        the slave has one to give, so the slave never needs to answer a spurious IRQ 15.)"""
        line = self.master.pending_line()
        if line == -1:
            return self.master.vector_base + 7
        self.master.ack(line)
        if line == CASCADE:
            sline = self.slave.pending_line()
            self.slave.ack(sline)
            vector = self.slave.vector_base + sline
        else:
            vector = self.master.vector_base + line
        self._settle(was_pending=True)  # the CPU is taking an interrupt: no kick needed
        return vector

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
        self._settle(was)

    def get_state(self) -> dict[str, Any]:
        return {"master": self.master.get_state(), "slave": self.slave.get_state()}

    def set_state(self, state: dict[str, Any]) -> None:
        self.master.set_state(state["master"])
        self.slave.set_state(state["slave"])
