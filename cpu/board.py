"""The board: I/O port dispatch and the context every device is built with.

Devices never see Unicorn, the executor or the event log directly. They get a BoardContext:
the current icount, timers, an IRQ line setter, and the record/replay seam (`rr`) that they call
at each point of non-determinism (a clock read, a disk read)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol


class Device(Protocol):
    """What the board needs from a device."""

    name: str
    ports: tuple[int, ...]

    def io_read(self, port: int, size: int) -> int: ...

    def io_write(self, port: int, size: int, value: int) -> None: ...

    def get_state(self) -> dict[str, Any]:
        """Everything the device holds, as JSON-able values (snapshots store it)."""
        ...

    def set_state(self, state: dict[str, Any]) -> None:
        """Load what get_state returned, re-arming timers from the stored deadlines."""
        ...


@dataclass
class BoardContext:
    """What a device may use. `now()` is exact even in the middle of an executor slice."""

    now: Callable[[], int]
    shift: int
    timers: Any  # cpu.timers.TimerQueue
    rr: Any  # replay.seam.Seam
    set_irq: Callable[[int, int], None] = lambda line, level: None
    kick: Callable[[], None] = lambda: None
    options: dict[str, Any] = field(default_factory=dict)

    def ns(self, icount: int) -> int:
        """Virtual nanoseconds at an icount: each instruction is 2**shift ns (QEMU's -icount)."""
        return icount << self.shift

    def icount_at_ns(self, ns: int) -> int:
        """First icount whose virtual time is at or after `ns`."""
        return -((-ns) >> self.shift)


class Board:
    """Devices by port. Unclaimed ports read as all ones and ignore writes, as on a PC's ISA bus."""

    def __init__(self) -> None:
        self.devices: list[Device] = []
        self.by_port: dict[int, Device] = {}

    def add(self, device: Device) -> Device:
        for port in device.ports:
            if port in self.by_port:
                raise ValueError(f"port {port:#x} claimed by {self.by_port[port].name} and {device.name}")
            self.by_port[port] = device
        self.devices.append(device)
        return device

    def io_read(self, port: int, size: int) -> int:
        dev = self.by_port.get(port)
        if dev is None:
            return (1 << (8 * size)) - 1
        return dev.io_read(port, size)

    def io_write(self, port: int, size: int, value: int) -> None:
        dev = self.by_port.get(port)
        if dev is not None:
            dev.io_write(port, size, value)

    def get_state(self) -> dict[str, Any]:
        return {d.name: d.get_state() for d in self.devices}

    def set_state(self, state: dict[str, Any]) -> None:
        for d in self.devices:
            d.set_state(state[d.name])
