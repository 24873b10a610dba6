"""PC devices through their ports, with a fake board context: a settable clock, a real timer
queue, a recorder of IRQ line changes and kicks, and a plain record/replay seam."""
from __future__ import annotations

import calendar
import hashlib
import json
import math
from fractions import Fraction

import pytest

from cpu.board import Board, BoardContext
from cpu.devices.ata import BUSY_ICOUNTS, AtaDisk
from cpu.devices.debugport import DebugCon, DebugExit
from cpu.devices.pic import Pic8259Pair
from cpu.devices.pit import Pit8254
from cpu.devices.rtc import Rtc146818
from cpu.devices.uart import Uart16550
from cpu.disk import SECTOR, DiskImage
from cpu.timers import TimerQueue
from replay.seam import PlainSeam

SHIFT = 7
HZ = 1_193_182


class Fake:
    """A board context whose virtual time moves only when the test says so."""

    def __init__(self, icount: int = 0) -> None:
        self.icount = icount
        self.irqs: list[tuple[int, int, int]] = []  # (line, level, icount)
        self.kicks = 0
        self.timers = TimerQueue(lambda: self.icount)
        self.ctx = BoardContext(now=lambda: self.icount, shift=SHIFT, timers=self.timers,
                                rr=PlainSeam(), set_irq=self._set_irq, kick=self._kick)

    def _set_irq(self, line: int, level: int) -> None:
        self.irqs.append((line, level, self.icount))

    def _kick(self) -> None:
        self.kicks += 1

    def run_to(self, icount: int) -> None:
        """Advance virtual time, firing each timer at its own deadline."""
        while (d := self.timers.next_deadline()) is not None and d <= icount:
            self.icount = d
            self.timers.fire_due(d)
        self.icount = icount

    def rises(self, line: int) -> list[int]:
        return [when for l, level, when in self.irqs if l == line and level]


class Scripted:
    """A time/block input class that answers from a script, as a replay does."""

    def __init__(self, *values) -> None:
        self.values = list(values)
        self.calls: list[tuple] = []

    def read(self, *args):
        self.calls.append(args[:-1])
        return self.values.pop(0)


class Counting:
    """A time input class that produces the host value, counting the calls (as a recording)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def read(self, source, produce):
        value = produce()
        self.calls.append((source, value))
        return value


def round_trip(device, make):
    """The state survives JSON, and a fresh device loaded with it reports the same state."""
    state = device.get_state()
    assert json.loads(json.dumps(state)) == state
    other = make()
    other.set_state(json.loads(json.dumps(state)))
    assert other.get_state() == state
    return other


def test_all_devices_share_a_board_without_port_clashes(disk_image):
    f = Fake()
    board = Board()
    board.add(Pic8259Pair(f.ctx))
    board.add(Pit8254(f.ctx))
    board.add(Uart16550(f.ctx, lambda b: None))
    board.add(Rtc146818(f.ctx, lambda: 0.0))
    board.add(AtaDisk(f.ctx, DiskImage(disk_image)))
    board.add(DebugExit(f.ctx, lambda s: None))
    board.add(DebugCon(f.ctx, lambda b: None))
    assert board.io_read(0xE9, 1) == 0xE9
    assert board.io_read(0x80, 1) == 0xFF  # unclaimed
    state = board.get_state()
    assert json.loads(json.dumps(state)) == state
    board.set_state(state)


# -- PIC ----------------------------------------------------------------------------------------

def init_pics(pic: Pic8259Pair, base: int = 0x20, icw4: int = 0x01) -> None:
    """The usual remap: cascade, ICW4, master at `base`, slave at `base` + 8, all unmasked."""
    for port, value in ((0x20, 0x11), (0xA0, 0x11), (0x21, base), (0xA1, base + 8),
                        (0x21, 0x04), (0xA1, 0x02), (0x21, icw4), (0xA1, icw4),
                        (0x21, 0x00), (0xA1, 0x00)):
        pic.io_write(port, 1, value)


def pulse(pic: Pic8259Pair, line: int) -> None:
    pic.set_irq(line, 1)
    pic.set_irq(line, 0)


def eoi(pic: Pic8259Pair, line: int) -> None:
    if line >= 8:
        pic.io_write(0xA0, 1, 0x20)
    pic.io_write(0x20, 1, 0x20)


def test_pic_bios_vectors_before_init():
    pic = Pic8259Pair(Fake().ctx)
    pulse(pic, 0)
    assert pic.acknowledge() == 0x08
    pulse(pic, 12)
    eoi(pic, 0)
    assert pic.acknowledge() == 0x74


def test_pic_init_remaps_and_masks():
    f = Fake()
    pic = Pic8259Pair(f.ctx)
    init_pics(pic)
    pic.io_write(0x21, 1, 0xFE)  # only IRQ 0
    assert pic.io_read(0x21, 1) == 0xFE
    pulse(pic, 1)
    assert not pic.pending() and f.kicks == 0
    pic.io_write(0x21, 1, 0xFC)  # unmasking a latched request delivers it
    assert pic.pending() and f.kicks == 1
    assert pic.acknowledge() == 0x21


def test_pic_init_without_icw4_and_single_mode():
    pic = Pic8259Pair(Fake().ctx)
    pic.io_write(0x20, 1, 0x10)  # cascade, no ICW4
    pic.io_write(0x21, 1, 0x40)
    pic.io_write(0x21, 1, 0x04)
    pic.io_write(0x21, 1, 0xAA)  # already OCW1
    assert pic.io_read(0x21, 1) == 0xAA
    pic.io_write(0xA0, 1, 0x13)  # single, ICW4: no ICW3
    pic.io_write(0xA1, 1, 0x48)
    pic.io_write(0xA1, 1, 0x01)
    pic.io_write(0xA1, 1, 0x55)
    assert pic.io_read(0xA1, 1) == 0x55
    pic.io_write(0x21, 1, 0x00)
    pic.io_write(0xA1, 1, 0x00)
    pulse(pic, 9)
    assert pic.acknowledge() == 0x49


def test_pic_icw2_ignores_low_bits_and_icw1_clears_the_mask():
    pic = Pic8259Pair(Fake().ctx)
    pic.io_write(0x21, 1, 0xFF)
    init_pics(pic, base=0x20)
    pic.io_write(0x20, 1, 0x11)
    assert pic.io_read(0x21, 1) == 0  # ICW1 clears IMR
    pic.io_write(0x21, 1, 0x37)  # ICW2 with line bits set
    pic.io_write(0x21, 1, 0x04)
    pic.io_write(0x21, 1, 0x01)
    pulse(pic, 3)
    assert pic.acknowledge() == 0x33


def test_pic_edge_triggered():
    f = Fake()
    pic = Pic8259Pair(f.ctx)
    init_pics(pic)
    pic.set_irq(1, 1)
    pic.set_irq(1, 1)  # no new edge
    assert f.kicks == 1
    assert pic.acknowledge() == 0x21
    eoi(pic, 1)
    assert not pic.pending()  # still high, but no new edge
    pic.set_irq(1, 0)
    pic.set_irq(1, 1)
    assert pic.pending() and f.kicks == 2


def test_pic_fixed_priority_and_nesting():
    f = Fake()
    pic = Pic8259Pair(f.ctx)
    init_pics(pic)
    pulse(pic, 3)
    pulse(pic, 1)
    assert pic.acknowledge() == 0x21
    assert not pic.pending()  # IRQ 3 waits behind the in-service IRQ 1
    pulse(pic, 0)
    assert pic.pending()  # IRQ 0 outranks it
    assert pic.acknowledge() == 0x20
    pic.io_write(0x20, 1, 0x0B)
    assert pic.io_read(0x20, 1) == 0b11  # ISR: 0 and 1
    pic.io_write(0x20, 1, 0x20)  # non-specific EOI ends the highest: 0
    assert pic.io_read(0x20, 1) == 0b10
    kicks = f.kicks
    pic.io_write(0x20, 1, 0x61)  # specific EOI for 1
    assert pic.io_read(0x20, 1) == 0
    assert pic.pending() and f.kicks == kicks + 1  # IRQ 3 is free to go: the executor hears it
    assert pic.acknowledge() == 0x23


def test_pic_specific_eoi_of_a_lower_line():
    pic = Pic8259Pair(Fake().ctx)
    init_pics(pic)
    pulse(pic, 5)
    assert pic.acknowledge() == 0x25
    pulse(pic, 3)
    assert pic.acknowledge() == 0x23
    pic.io_write(0x20, 1, 0x65)  # end 5 while 3 stays in service
    pic.io_write(0x20, 1, 0x0B)
    assert pic.io_read(0x20, 1) == 0b1000


def test_pic_read_irr_and_isr():
    pic = Pic8259Pair(Fake().ctx)
    init_pics(pic)
    pic.io_write(0x21, 1, 0xFF)
    pulse(pic, 4)
    pulse(pic, 6)
    assert pic.io_read(0x20, 1) == 0x50  # IRR is the default selection
    pic.io_write(0x20, 1, 0x0B)
    assert pic.io_read(0x20, 1) == 0
    pic.io_write(0x20, 1, 0x08)  # OCW3 without RR: selection unchanged
    assert pic.io_read(0x20, 1) == 0
    pic.io_write(0x20, 1, 0x0A)
    assert pic.io_read(0x20, 1) == 0x50


def test_pic_cascade_ranks_slave_at_irq2():
    f = Fake()
    pic = Pic8259Pair(f.ctx)
    init_pics(pic)
    pulse(pic, 3)
    pulse(pic, 12)
    assert pic.acknowledge() == 0x2C  # via line 2, ahead of 3
    for chip, isr in ((0x20, 0b100), (0xA0, 0b10000)):
        pic.io_write(chip, 1, 0x0B)
        assert pic.io_read(chip, 1) == isr
    assert not pic.pending()  # 3 ranks below the cascade in service
    pulse(pic, 1)
    assert pic.acknowledge() == 0x21  # 1 ranks above it
    eoi(pic, 1)
    pulse(pic, 14)
    assert not pic.pending()  # 14 ranks below 12 on the slave
    pulse(pic, 8)
    assert not pic.pending()  # above 12, but the master's cascade line is still in service
    eoi(pic, 12)  # slave EOI ends 12, master EOI ends the cascade
    assert pic.acknowledge() == 0x28
    eoi(pic, 8)
    assert pic.acknowledge() == 0x2E
    eoi(pic, 14)
    assert pic.acknowledge() == 0x23
    eoi(pic, 3)
    assert not pic.pending()


def test_pic_slave_mask_and_cascade_mask():
    pic = Pic8259Pair(Fake().ctx)
    init_pics(pic)
    pulse(pic, 12)
    assert pic.pending()
    pic.io_write(0xA1, 1, 0x10)  # a request withdrawn before INTA leaves nothing behind
    assert not pic.pending()
    pic.io_write(0xA1, 1, 0x00)
    pic.io_write(0x21, 1, 0x04)  # masking the cascade on the master holds all slave lines
    assert not pic.pending()
    pic.io_write(0x21, 1, 0x00)
    assert pic.acknowledge() == 0x2C


def test_pic_slave_request_behind_one_in_service_is_not_lost():
    pic = Pic8259Pair(Fake().ctx)
    init_pics(pic, icw4=0x03)  # auto-EOI on both
    pulse(pic, 9)
    pulse(pic, 10)
    assert pic.acknowledge() == 0x29
    assert pic.acknowledge() == 0x2A
    assert not pic.pending()


def test_pic_auto_eoi():
    pic = Pic8259Pair(Fake().ctx)
    init_pics(pic, icw4=0x03)
    pulse(pic, 1)
    assert pic.acknowledge() == 0x21
    pic.io_write(0x20, 1, 0x0B)
    assert pic.io_read(0x20, 1) == 0
    pulse(pic, 3)
    assert pic.acknowledge() == 0x23  # nothing blocks it


def test_pic_spurious_irq7():
    pic = Pic8259Pair(Fake().ctx)
    init_pics(pic)
    assert pic.acknowledge() == 0x27
    pic.io_write(0x20, 1, 0x0B)
    assert pic.io_read(0x20, 1) == 0  # a spurious interrupt is not in service


def test_pic_state_round_trip():
    f = Fake()
    pic = Pic8259Pair(f.ctx)
    init_pics(pic)
    pic.io_write(0x21, 1, 0x02)
    pic.set_irq(1, 1)
    pulse(pic, 12)
    pulse(pic, 4)
    assert pic.acknowledge() == 0x2C
    pic.io_write(0x20, 1, 0x0B)
    other = round_trip(pic, lambda: Pic8259Pair(Fake().ctx))
    for p in (pic, other):
        assert p.io_read(0x20, 1) == 0b100
        eoi(p, 12)
        assert p.acknowledge() == 0x24
        p.set_irq(1, 1)  # still high: no edge
        p.io_write(0x21, 1, 0x00)
        assert p.acknowledge() == 0x21  # the edge latched before the snapshot


# -- PIT ----------------------------------------------------------------------------------------

def period_end_icount(start_icount: int, k: int, count: int) -> int:
    """First icount at or after the exact end of the k-th period (each icount is 2**SHIFT ns)."""
    end_ns = Fraction(start_icount * 2 ** SHIFT) + Fraction(k * count * 10 ** 9, HZ)
    return math.ceil(end_ns / 2 ** SHIFT)


def clocks_since(start_icount: int, icount: int) -> int:
    return (icount - start_icount) * 2 ** SHIFT * HZ // 10 ** 9


def program(pit: Pit8254, channel: int, mode: int, count: int) -> None:
    pit.io_write(0x43, 1, channel << 6 | 0x30 | mode << 1)
    pit.io_write(0x40 + channel, 1, count & 0xFF)
    pit.io_write(0x40 + channel, 1, (count >> 8) & 0xFF)


def read_word(pit: Pit8254, channel: int = 0) -> int:
    lo = pit.io_read(0x40 + channel, 1)
    return lo | pit.io_read(0x40 + channel, 1) << 8


# 16055 clocks from icount 0 end at a fractional ns just past a whole icount: rounding the ns
# down first would fire one icount early.
@pytest.mark.parametrize("mode,count,start", [(2, 1193, 1000), (3, 0, 77), (2, 11932, 5),
                                              (6, 2, 3), (7, 59659, 0), (2, 16055, 0)])
def test_pit_periodic_irq_at_exact_icounts(mode, count, start):
    f = Fake(start)
    pit = Pit8254(f.ctx)
    program(pit, 0, mode, count)
    period = count or 0x10000
    f.run_to(period_end_icount(start, 6, period))
    expected = [period_end_icount(start, k, period) for k in range(1, 7)]
    assert f.irqs == [e for t in expected for e in ((0, 1, t), (0, 0, t))]
    assert pit.timer.deadline == period_end_icount(start, 7, period)


def test_pit_no_drift_after_many_periods():
    f = Fake(0)
    pit = Pit8254(f.ctx)
    program(pit, 0, 2, 1193)
    f.run_to(period_end_icount(0, 5000, 1193))
    assert len(f.rises(0)) == 5000
    assert f.rises(0)[-1] == period_end_icount(0, 5000, 1193)


def test_pit_mode0_fires_once():
    f = Fake(500)
    pit = Pit8254(f.ctx)
    program(pit, 0, 0, 3000)
    f.run_to(10 ** 7)
    assert f.irqs == [(0, 1, period_end_icount(500, 1, 3000)), (0, 0, period_end_icount(500, 1, 3000))]
    assert pit.timer.deadline is None


def test_pit_reload_restarts_and_control_word_stops():
    f = Fake(0)
    pit = Pit8254(f.ctx)
    program(pit, 0, 2, 1193)
    f.run_to(3000)
    program(pit, 0, 2, 100)  # a new count restarts the period from now
    assert pit.timer.deadline == period_end_icount(3000, 1, 100)
    pit.io_write(0x43, 1, 0x34)  # control word alone: counting stops
    assert pit.timer.deadline is None
    f.run_to(10 ** 6)
    assert f.irqs == []


def test_pit_byte_access_modes():
    f = Fake(0)
    pit = Pit8254(f.ctx)
    pit.io_write(0x43, 1, 0x14)  # lobyte only, mode 2
    pit.io_write(0x40, 1, 200)
    assert pit.timer.deadline == period_end_icount(0, 1, 200)
    assert pit.io_read(0x40, 1) == 200  # and reads are low bytes too
    pit.io_write(0x43, 1, 0x24)  # hibyte only, mode 2
    pit.io_write(0x40, 1, 0x12)
    assert pit.timer.deadline == period_end_icount(0, 1, 0x1200)
    f.run_to(100)
    expected = 0x1200 - clocks_since(0, 100)
    assert pit.io_read(0x40, 1) == expected >> 8


def test_pit_latch_holds_the_value():
    f = Fake(0)
    pit = Pit8254(f.ctx)
    program(pit, 0, 2, 1000)
    f.run_to(12345)
    pit.io_write(0x43, 1, 0x00)
    expected = 1000 - clocks_since(0, 12345) % 1000
    f.run_to(13000)
    pit.io_write(0x43, 1, 0x00)  # a second latch before the read is ignored
    assert read_word(pit) == expected
    f.run_to(13001)
    assert read_word(pit) == 1000 - clocks_since(0, 13001) % 1000  # live again


def test_pit_mode3_counts_by_two_and_count_zero_is_65536():
    f = Fake(0)
    pit = Pit8254(f.ctx)
    program(pit, 0, 3, 0)
    assert read_word(pit) == 0  # 65536 shows as 0
    f.run_to(1000)
    value = read_word(pit)
    assert value == 0x10000 - 2 * clocks_since(0, 1000) and value % 2 == 0
    program(pit, 0, 3, 1000)
    f.run_to(1000 + 70)
    assert read_word(pit) == 1000 - 2 * clocks_since(1000, 1070) % 1000


def test_pit_mode0_counts_down_through_zero():
    f = Fake(0)
    pit = Pit8254(f.ctx)
    program(pit, 0, 0, 500)
    f.run_to(1000)
    assert read_word(pit) == (500 - clocks_since(0, 1000)) & 0xFFFF


def test_pit_counter_reads_go_through_the_time_seam():
    f = Fake(0)
    pit = Pit8254(f.ctx)
    program(pit, 0, 2, 1000)
    seen = Counting()
    f.ctx.rr.time = seen
    f.run_to(50)
    pit.io_write(0x43, 1, 0x00)
    read_word(pit)
    read_word(pit)  # a live lo/hi read is one reading
    assert [s for s, _ in seen.calls] == ["pit", "pit"]
    f.ctx.rr.time = Scripted(0x1234)  # replay: the logged value, not the computed one
    assert read_word(pit) == 0x1234


def test_pit_channel2_counts_without_irq():
    f = Fake(0)
    pit = Pit8254(f.ctx)
    program(pit, 2, 3, 4000)
    assert pit.timer.deadline is None
    f.run_to(200)
    pit.io_write(0x43, 1, 0x80)
    assert read_word(pit, 2) == 4000 - 2 * clocks_since(0, 200) % 4000
    assert f.irqs == []


def test_pit_state_round_trip_continues_exactly():
    f = Fake(100)
    pit = Pit8254(f.ctx)
    program(pit, 0, 2, 1193)
    f.run_to(period_end_icount(100, 3, 1193) + 5)
    pit.io_write(0x43, 1, 0x00)  # a latch outstanding at the snapshot
    g = Fake(f.icount)
    other = round_trip(pit, lambda: Pit8254(g.ctx))
    assert other.timer.deadline == period_end_icount(100, 4, 1193)
    assert read_word(other) == read_word(pit)
    end = period_end_icount(100, 9, 1193)
    f.irqs.clear()
    f.run_to(end)
    g.run_to(end)
    assert g.irqs == f.irqs and len(g.rises(0)) == 6  # periods 4 to 9
    pit.io_write(0x43, 1, 0x34)
    assert round_trip(pit, lambda: Pit8254(Fake().ctx)).timer.deadline is None


# -- UART ---------------------------------------------------------------------------------------

COM1 = 0x3F8


def make_uart():
    f = Fake()
    out = bytearray()
    return f, Uart16550(f.ctx, out.extend), out


def test_uart_divisor_latch_and_plain_registers():
    f, uart, out = make_uart()
    uart.io_write(COM1 + 3, 1, 0x80)
    uart.io_write(COM1 + 0, 1, 0x0C)
    uart.io_write(COM1 + 1, 1, 0x01)
    assert (uart.io_read(COM1 + 0, 1), uart.io_read(COM1 + 1, 1)) == (0x0C, 0x01)
    uart.io_write(COM1 + 3, 1, 0x03)
    assert uart.io_read(COM1 + 1, 1) == 0  # IER untouched by the divisor writes
    assert out == b"" and uart.io_read(COM1 + 3, 1) == 0x03
    uart.io_write(COM1 + 7, 1, 0x5A)
    assert uart.io_read(COM1 + 7, 1) == 0x5A
    uart.io_write(COM1 + 4, 1, 0x0B)
    assert uart.io_read(COM1 + 4, 1) == 0x0B
    assert uart.io_read(COM1 + 6, 1) & 0x30 == 0x30  # CTS, DSR
    assert f.irqs == []


def test_uart_transmit_is_instant():
    f, uart, out = make_uart()
    for b in b"hi\n":
        assert uart.io_read(COM1 + 5, 1) & 0x60 == 0x60
        uart.io_write(COM1, 1, b)
    assert out == b"hi\n"
    assert uart.io_read(COM1 + 5, 1) == 0x60


def test_uart_receive_buffer():
    f, uart, out = make_uart()
    assert uart.io_read(COM1 + 5, 1) & 1 == 0
    uart.receive(b"abc")
    uart.receive(b"d" * 40)  # more than a FIFO holds is still kept
    assert uart.io_read(COM1 + 5, 1) & 1
    assert bytes(uart.io_read(COM1, 1) for _ in range(43)) == b"abc" + b"d" * 40
    assert uart.io_read(COM1 + 5, 1) & 1 == 0
    assert uart.room() == 1
    uart.io_write(COM1 + 2, 1, 0x01)
    uart.receive(b"xy")
    assert uart.room() == 14
    uart.io_write(COM1 + 2, 1, 0x03)  # clear the receive FIFO
    assert uart.io_read(COM1 + 5, 1) & 1 == 0


def test_uart_iir_priorities_and_fifo_bits():
    f, uart, out = make_uart()
    assert uart.io_read(COM1 + 2, 1) == 0x01
    uart.io_write(COM1 + 2, 1, 0x07)
    assert uart.io_read(COM1 + 2, 1) == 0xC1
    uart.io_write(COM1 + 1, 1, 0x03)
    uart.receive(b"z")
    assert uart.io_read(COM1 + 2, 1) == 0xC4  # receive data outranks THR empty
    assert uart.io_read(COM1, 1) == ord("z")
    assert uart.io_read(COM1 + 2, 1) == 0xC2  # now THR empty; reading IIR clears it
    assert uart.io_read(COM1 + 2, 1) == 0xC1


def test_uart_irq_needs_out2_and_ier():
    f, uart, out = make_uart()
    uart.io_write(COM1 + 1, 1, 0x01)
    uart.receive(b"q")
    assert f.irqs == []  # OUT2 low: the line is not driven
    uart.io_write(COM1 + 4, 1, 0x08)
    assert f.irqs == [(4, 1, 0)]
    uart.io_read(COM1, 1)
    assert f.irqs[-1] == (4, 0, 0)
    uart.io_write(COM1 + 1, 1, 0x00)
    uart.receive(b"r")
    assert f.irqs[-1] == (4, 0, 0)  # receive interrupt disabled
    uart.io_write(COM1 + 1, 1, 0x01)
    assert f.irqs[-1] == (4, 1, 0)
    uart.io_write(COM1 + 4, 1, 0x03)
    assert f.irqs[-1] == (4, 0, 0)


def test_uart_thr_empty_interrupt():
    f, uart, out = make_uart()
    uart.io_write(COM1 + 4, 1, 0x08)
    uart.io_write(COM1 + 1, 1, 0x02)  # enabling it with THR empty raises it at once
    assert f.irqs == [(4, 1, 0)]
    assert uart.io_read(COM1 + 2, 1) == 0x02
    assert f.irqs[-1] == (4, 0, 0)
    uart.io_write(COM1, 1, ord("A"))  # the byte leaves at once: a fresh edge
    assert f.irqs[-1] == (4, 1, 0)
    f.irqs.clear()
    uart.io_write(COM1, 1, ord("B"))  # written before the IIR read: the line drops and rises
    assert f.irqs == [(4, 0, 0), (4, 1, 0)]
    uart.io_write(COM1 + 1, 1, 0x00)
    assert f.irqs[-1] == (4, 0, 0) and uart.io_read(COM1 + 2, 1) == 0x01
    assert out == b"AB"


def test_uart_state_round_trip():
    f, uart, out = make_uart()
    uart.io_write(COM1 + 3, 1, 0x83)
    uart.io_write(COM1, 1, 0x03)
    uart.io_write(COM1 + 3, 1, 0x03)
    uart.io_write(COM1 + 2, 1, 0x07)
    uart.io_write(COM1 + 4, 1, 0x0B)
    uart.io_write(COM1 + 1, 1, 0x03)
    uart.receive(b"\x00\xffk")
    g = Fake()
    other = round_trip(uart, lambda: Uart16550(g.ctx, lambda b: None))
    assert g.irqs == []  # loading state does not replay IRQ edges
    assert bytes(other.io_read(COM1, 1) for _ in range(3)) == b"\x00\xffk"
    assert other.io_read(COM1 + 2, 1) == 0xC2
    assert g.irqs == [(4, 0, 0)]  # the restored line level was high
    other.io_write(COM1 + 3, 1, 0x80)
    assert other.io_read(COM1, 1) == 0x03


# -- RTC ----------------------------------------------------------------------------------------

SATURDAY = calendar.timegm((2024, 3, 9, 15, 4, 5)) + 0.25  # a Saturday afternoon, UTC


def rtc_read(rtc: Rtc146818, reg: int) -> int:
    rtc.io_write(0x70, 1, 0x80 | reg)  # with the NMI-disable bit, as the SDK writes it
    return rtc.io_read(0x71, 1)


CLOCK = (0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32)


def test_rtc_bcd_24h_by_default():
    rtc = Rtc146818(Fake().ctx, lambda: SATURDAY)
    assert [rtc_read(rtc, r) for r in CLOCK] == [0x05, 0x04, 0x15, 7, 0x09, 0x03, 0x24, 0x20]
    assert rtc_read(rtc, 0x0B) == 0x02
    assert rtc_read(rtc, 0x0D) == 0x80 and rtc_read(rtc, 0x0C) == 0


def test_rtc_binary_mode():
    rtc = Rtc146818(Fake().ctx, lambda: SATURDAY)
    rtc.io_write(0x70, 1, 0x0B)
    rtc.io_write(0x71, 1, 0x06)
    assert [rtc_read(rtc, r) for r in CLOCK] == [5, 4, 15, 7, 9, 3, 24, 20]


@pytest.mark.parametrize("hour,bcd,binary", [(15, 0x83, 0x83), (0, 0x12, 12), (12, 0x92, 0x8C),
                                             (11, 0x11, 11), (23, 0x91, 0x8B)])
def test_rtc_12_hour_mode(hour, bcd, binary):
    t = calendar.timegm((2024, 3, 9, hour, 0, 0))
    rtc = Rtc146818(Fake().ctx, lambda: t)
    rtc.io_write(0x70, 1, 0x0B)
    rtc.io_write(0x71, 1, 0x00)
    assert rtc_read(rtc, 0x04) == bcd
    rtc.io_write(0x70, 1, 0x0B)
    rtc.io_write(0x71, 1, 0x04)
    assert rtc_read(rtc, 0x04) == binary


def test_rtc_weekday_sunday_is_one():
    t = calendar.timegm((2023, 12, 31, 0, 0, 0))  # a Sunday
    rtc = Rtc146818(Fake().ctx, lambda: t)
    assert [rtc_read(rtc, r) for r in (0x06, 0x07, 0x08, 0x09)] == [1, 0x31, 0x12, 0x23]


def test_rtc_status_a_uip_and_divider():
    now = [SATURDAY]
    rtc = Rtc146818(Fake().ctx, lambda: now[0])
    assert rtc_read(rtc, 0x0A) == 0x26
    now[0] = int(SATURDAY) + 0.9999  # inside the last 244 us of the second
    assert rtc_read(rtc, 0x0A) == 0xA6
    rtc.io_write(0x70, 1, 0x0A)
    rtc.io_write(0x71, 1, 0xAF)  # UIP is read-only
    now[0] = SATURDAY
    assert rtc_read(rtc, 0x0A) == 0x2F


def test_rtc_cmos_ram_and_read_only_clock():
    rtc = Rtc146818(Fake().ctx, lambda: SATURDAY)
    ram = (0x0E, 0x31, 0x33, 0x7F)
    for reg in ram:
        rtc.io_write(0x70, 1, reg)
        rtc.io_write(0x71, 1, reg ^ 0xA5)
    assert [rtc_read(rtc, r) for r in ram] == [r ^ 0xA5 for r in ram]
    for reg in CLOCK + (0x0C, 0x0D):
        rtc.io_write(0x70, 1, reg)
        rtc.io_write(0x71, 1, 0x77)
    assert rtc_read(rtc, 0x00) == 0x05 and rtc_read(rtc, 0x0D) == 0x80 and rtc_read(rtc, 0x0C) == 0


def test_rtc_clock_reads_go_through_the_time_seam():
    def host_clock():
        raise AssertionError("the wall clock was read outside the seam")

    f = Fake()
    rtc = Rtc146818(f.ctx, host_clock)
    f.ctx.rr.time = Scripted(0x42, 0x26)
    assert rtc_read(rtc, 0x00) == 0x42
    assert rtc_read(rtc, 0x0A) == 0x26
    assert rtc_read(rtc, 0x40) == 0  # CMOS RAM needs no seam
    assert f.ctx.rr.time.calls == [("rtc",), ("rtc",)]


def test_rtc_state_round_trip():
    rtc = Rtc146818(Fake().ctx, lambda: SATURDAY)
    rtc.io_write(0x70, 1, 0x0B)
    rtc.io_write(0x71, 1, 0x04)
    rtc.io_write(0x70, 1, 0x50)
    rtc.io_write(0x71, 1, 0x99)
    rtc.io_write(0x70, 1, 0x02)
    other = round_trip(rtc, lambda: Rtc146818(Fake().ctx, lambda: SATURDAY))
    assert other.io_read(0x71, 1) == 4  # same index, binary minutes
    assert rtc_read(other, 0x50) == 0x99


# -- disk image ---------------------------------------------------------------------------------

def test_disk_refuses_bad_paths(tmp_path):
    for path, why in ((tmp_path / "missing.img", "cannot open"), (tmp_path, "not a regular file")):
        with pytest.raises(ValueError, match=why) as e:
            DiskImage(str(path))
        assert str(path) in str(e.value) and "\n" not in str(e.value)
    small = tmp_path / "small.img"
    small.write_bytes(b"x" * 100)
    with pytest.raises(ValueError, match="smaller than one sector"):
        DiskImage(str(small))


def test_disk_overlay_and_identity(disk_image, tmp_path):
    base = open(disk_image, "rb").read()
    disk = DiskImage(disk_image)
    assert disk.sectors == 64
    assert disk.read(3, 2) == base[3 * SECTOR:5 * SECTOR]
    disk.write(4, b"\x11" * SECTOR + b"\x22" * 10)
    assert disk.read(3, 3) == base[3 * SECTOR:4 * SECTOR] + b"\x11" * SECTOR + b"\x22" * 10 + bytes(502)
    assert list(disk.get_overlay()) == [4, 5]
    disk.write(1, b"\x33" * SECTOR)
    assert list(disk.get_overlay()) == [1, 4, 5]  # sector order, not write order
    ident = disk.identity()
    assert ident == {"path": disk_image, "size": len(base), "sha256": hashlib.sha256(base).hexdigest()}
    assert open(disk_image, "rb").read() == base

    other = DiskImage(disk_image)
    other.set_overlay(disk.get_overlay())
    assert other.read(0, 64) == disk.read(0, 64)


def test_disk_without_base_reads_only_what_was_written():
    disk = DiskImage.without_base(16)
    assert disk.sectors == 16 and disk.identity()["sha256"] is None
    disk.write(2, b"\x44" * SECTOR)
    assert disk.read(2, 1) == b"\x44" * SECTOR
    with pytest.raises(ValueError, match="sector 3 "):
        disk.read(2, 2)


# -- ATA ----------------------------------------------------------------------------------------

def make_ata(disk_image, icount: int = 0):
    f = Fake(icount)
    return f, AtaDisk(f.ctx, DiskImage(disk_image) if disk_image else None)


def issue(ata: AtaDisk, command: int, lba: int = 0, count: int = 1, drive: int = 0xE0) -> None:
    ata.io_write(0x1F6, 1, drive | (lba >> 24) & 0x0F)
    ata.io_write(0x1F2, 1, count & 0xFF)
    ata.io_write(0x1F3, 1, lba & 0xFF)
    ata.io_write(0x1F4, 1, (lba >> 8) & 0xFF)
    ata.io_write(0x1F5, 1, (lba >> 16) & 0xFF)
    ata.io_write(0x1F7, 1, command)


def read_sector(ata: AtaDisk, size: int = 2) -> bytes:
    return b"".join(ata.io_read(0x1F0, size).to_bytes(size, "little") for _ in range(SECTOR // size))


def wait_ready(f: Fake, ata: AtaDisk) -> None:
    """The drive is busy for exactly BUSY_ICOUNTS, then ready."""
    start = f.icount
    assert ata.io_read(0x3F6, 1) & 0x80
    f.run_to(start + BUSY_ICOUNTS - 1)
    assert ata.io_read(0x3F6, 1) == 0x80
    f.run_to(start + BUSY_ICOUNTS)
    assert not ata.io_read(0x3F6, 1) & 0x80


def test_ata_identify(disk_image):
    f, ata = make_ata(disk_image)
    issue(ata, 0xEC, drive=0xA0)
    wait_ready(f, ata)
    assert f.irqs == [(14, 1, BUSY_ICOUNTS)]
    assert ata.io_read(0x3F6, 1) == 0x58  # DRDY DSC DRQ
    assert f.irqs[-1][1] == 1  # the alternate status does not acknowledge
    assert ata.io_read(0x1F7, 1) == 0x58
    assert f.irqs[-1] == (14, 0, BUSY_ICOUNTS)
    words = [ata.io_read(0x1F0, 2) for _ in range(256)]
    assert ata.io_read(0x1F7, 1) == 0x50

    def text(start: int, n: int) -> str:
        return b"".join(w.to_bytes(2, "big") for w in words[start:start + n]).decode().strip()

    assert text(27, 20) == "URR HARDDISK" and text(10, 10) and text(23, 4)
    assert words[49] & 0x0200
    assert words[60] | words[61] << 16 == 64


def test_ata_read_sectors_with_an_irq_each(disk_image):
    base = open(disk_image, "rb").read()
    f, ata = make_ata(disk_image, icount=100)
    issue(ata, 0x20, lba=5, count=3)
    got = b""
    for n in range(3):
        wait_ready(f, ata)
        assert ata.io_read(0x1F7, 1) == 0x58
        got += read_sector(ata, size=4 if n == 1 else 2)  # 32-bit reads take two words
    assert got == base[5 * SECTOR:8 * SECTOR]
    assert ata.io_read(0x1F7, 1) == 0x50
    assert f.rises(14) == [100 + BUSY_ICOUNTS * (n + 1) for n in range(3)]
    assert ata.io_read(0x1F0, 2) == 0xFFFF  # no data outside a transfer


def test_ata_read_count_zero_is_256(tmp_path):
    path = tmp_path / "big.img"
    path.write_bytes(bytes(300 * SECTOR))
    f, ata = make_ata(str(path))
    issue(ata, 0x20, lba=0, count=0)
    assert ata.remaining == 256
    deadline = ata.timer.deadline
    ata.io_write(0x1F7, 1, 0xE7)  # ignored: busy
    assert ata.command == 0x20 and ata.timer.deadline == deadline
    wait_ready(f, ata)
    assert ata.io_read(0x1F7, 1) == 0x58


def test_ata_write_flush_and_base_unchanged(disk_image):
    base = open(disk_image, "rb").read()
    digest = hashlib.sha256(base).hexdigest()
    f, ata = make_ata(disk_image)
    data = bytes(range(256)) * 4
    issue(ata, 0x30, lba=10, count=2)
    assert ata.io_read(0x3F6, 1) == 0x58 and f.irqs == []  # the first sector is asked for at once
    for n in range(2):
        for i in range(0, SECTOR, 2):
            ata.io_write(0x1F0, 2, int.from_bytes(data[n * SECTOR + i:n * SECTOR + i + 2], "little"))
        wait_ready(f, ata)
        assert ata.io_read(0x1F7, 1) == (0x58 if n == 0 else 0x50)
    assert f.rises(14) == [BUSY_ICOUNTS, 2 * BUSY_ICOUNTS]
    assert ata.disk.read(10, 2) == data
    assert list(ata.disk.get_overlay()) == [10, 11]

    issue(ata, 0xE7)
    wait_ready(f, ata)
    assert ata.io_read(0x1F7, 1) == 0x50 and len(f.rises(14)) == 3

    issue(ata, 0x20, lba=9, count=3)
    got = b""
    for _ in range(3):
        wait_ready(f, ata)
        got += read_sector(ata)
    assert got == base[9 * SECTOR:10 * SECTOR] + data
    assert open(disk_image, "rb").read() == base
    assert hashlib.sha256(open(disk_image, "rb").read()).hexdigest() == digest


def test_ata_32bit_writes(disk_image):
    f, ata = make_ata(disk_image)
    issue(ata, 0x30, lba=0, count=1)
    for i in range(SECTOR // 4):
        ata.io_write(0x1F0, 4, 0x01020304 + i)
    wait_ready(f, ata)
    assert ata.disk.read(0, 1)[:8] == bytes([4, 3, 2, 1, 5, 3, 2, 1])


@pytest.mark.parametrize("command,lba,count,drive,error", [
    (0x91, 0, 1, 0xE0, 0x04),  # unknown command: ABRT
    (0x20, 63, 2, 0xE0, 0x10),  # past the end: IDNF
    (0x30, 64, 1, 0xE0, 0x10),
    (0x20, 0, 1, 0xA0, 0x04),  # CHS: ABRT
])
def test_ata_errors(disk_image, command, lba, count, drive, error):
    f, ata = make_ata(disk_image)
    issue(ata, command, lba=lba, count=count, drive=drive)
    assert ata.io_read(0x3F6, 1) == 0x51  # DRDY DSC ERR
    assert ata.io_read(0x1F1, 1) == error
    assert f.irqs == [(14, 1, 0)]
    ata.io_read(0x1F7, 1)
    issue(ata, 0xE7)  # the drive takes the next command
    wait_ready(f, ata)
    assert ata.io_read(0x1F7, 1) == 0x50 and ata.io_read(0x1F1, 1) == 0


def test_ata_nien_holds_the_irq(disk_image):
    f, ata = make_ata(disk_image)
    ata.io_write(0x3F6, 1, 0x02)
    issue(ata, 0x20, lba=0, count=1)
    wait_ready(f, ata)
    assert ata.io_read(0x3F6, 1) == 0x58 and f.irqs == []
    ata.io_write(0x3F6, 1, 0x00)
    read_sector(ata)
    issue(ata, 0xE7)
    wait_ready(f, ata)
    assert f.irqs == [(14, 1, f.icount)]
    ata.io_write(0x3F6, 1, 0x02)  # setting nIEN drops an asserted line
    assert f.irqs[-1] == (14, 0, f.icount)


def test_ata_slave_and_no_disk_read_zero(disk_image):
    f, ata = make_ata(disk_image)
    issue(ata, 0xEC, drive=0xB0)
    assert ata.io_read(0x1F7, 1) == 0 and ata.io_read(0x3F6, 1) == 0
    assert ata.timer.deadline is None and f.irqs == []
    ata.io_write(0x1F6, 1, 0xA0)
    assert ata.io_read(0x1F7, 1) == 0x50
    f, empty = make_ata(None)
    issue(empty, 0xEC, drive=0xA0)
    assert empty.io_read(0x1F7, 1) == 0 and empty.timer.deadline is None


def test_ata_registers_read_back_and_soft_reset(disk_image):
    f, ata = make_ata(disk_image)
    ata.io_write(0x1F1, 1, 0x55)
    ata.io_write(0x1F2, 1, 7)
    ata.io_write(0x1F3, 1, 0x11)
    ata.io_write(0x1F4, 1, 0x22)
    ata.io_write(0x1F5, 1, 0x33)
    ata.io_write(0x1F6, 1, 0xE4)
    assert [ata.io_read(p, 1) for p in range(0x1F2, 0x1F7)] == [7, 0x11, 0x22, 0x33, 0xE4]
    ata.io_write(0x1F4, 1, 0)
    ata.io_write(0x1F5, 1, 0)
    ata.io_write(0x1F6, 1, 0xE0)
    ata.io_write(0x1F7, 1, 0x20)
    assert ata.io_read(0x3F6, 1) & 0x80
    ata.io_write(0x3F6, 1, 0x04)  # SRST abandons the command
    ata.io_write(0x3F6, 1, 0x00)
    assert ata.timer.deadline is None
    assert ata.io_read(0x1F7, 1) == 0x50
    assert [ata.io_read(p, 1) for p in range(0x1F1, 0x1F6)] == [1, 1, 1, 0, 0]  # ATA signature
    assert ata.io_read(0x1F6, 1) & 0x0F == 0


def test_ata_reads_go_through_the_block_seam(disk_image):
    f = Fake()
    ata = AtaDisk(f.ctx, DiskImage.without_base(64))  # a replay disk: any direct read fails
    sectors = [bytes([n]) * SECTOR for n in (7, 8)]
    f.ctx.rr.block = Scripted(*sectors)
    issue(ata, 0x21, lba=20, count=2)
    got = b""
    for _ in range(2):
        wait_ready(f, ata)
        got += read_sector(ata)
    assert got == b"".join(sectors)
    assert f.ctx.rr.block.calls == [(20, 1), (21, 1)]  # one call per sector


def test_ata_state_round_trip_mid_transfer(disk_image):
    base = open(disk_image, "rb").read()
    f, ata = make_ata(disk_image)
    issue(ata, 0x20, lba=30, count=2)
    wait_ready(f, ata)
    first = b"".join(ata.io_read(0x1F0, 2).to_bytes(2, "little") for _ in range(100))
    g = Fake(f.icount)
    other = round_trip(ata, lambda: AtaDisk(g.ctx, DiskImage(disk_image)))
    first += read_sector(other)[:SECTOR - 200]
    assert other.timer.deadline == g.icount + BUSY_ICOUNTS
    g.run_to(g.icount + BUSY_ICOUNTS)
    assert first + read_sector(other) == base[30 * SECTOR:32 * SECTOR]

    issue(ata, 0xE7)  # only an armed deadline: restored as it was, cancelled when None
    busy = round_trip(ata, lambda: AtaDisk(Fake(f.icount).ctx, DiskImage(disk_image)))
    assert busy.timer.deadline == ata.timer.deadline
    f.run_to(f.icount + BUSY_ICOUNTS)
    idle = AtaDisk(Fake().ctx, DiskImage(disk_image))
    idle.io_write(0x1F7, 1, 0xE7)
    idle.set_state(ata.get_state())
    assert idle.timer.deadline is None


# -- debug ports --------------------------------------------------------------------------------

def test_debug_exit_status():
    seen: list[int] = []
    dev = DebugExit(Fake().ctx, seen.append)
    dev.io_write(0xF4, 1, 0x10)
    dev.io_write(0xF4, 1, 0x1FF)  # an 8-bit access sees 8 bits
    dev.io_write(0xF4, 4, 0x12345678)
    assert seen == [0x21, 0x1FF, (0x12345678 << 1) | 1]
    assert dev.get_state() == {}


def test_debugcon():
    out = bytearray()
    dev = DebugCon(Fake().ctx, out.extend)
    for b in b"ok\n":
        dev.io_write(0xE9, 1, b)
    assert out == b"ok\n" and dev.io_read(0xE9, 1) == 0xE9
