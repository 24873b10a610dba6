"""QEMU's isa-debug-exit (0xF4) and debugcon (0xE9): ending the machine and a console byte port."""
from __future__ import annotations

from typing import Any, Callable

from cpu.board import BoardContext


class DebugExit:
    """A write of v ends the machine with exit status (v << 1) | 1, as QEMU's iobase=0xf4.

    v is the value as wide as the access (`out dx, al` or `out dx, eax`); the host process
    status is then its low 8 bits, as with QEMU."""

    name = "debug-exit"
    ports = (0xF4,)

    def __init__(self, ctx: BoardContext, on_exit: Callable[[int], None]) -> None:
        self.on_exit = on_exit

    def io_read(self, port: int, size: int) -> int:
        return 0xFF

    def io_write(self, port: int, size: int, value: int) -> None:
        self.on_exit(((value & ((1 << (8 * size)) - 1)) << 1) | 1)

    def get_state(self) -> dict[str, Any]:
        return {}

    def set_state(self, state: dict[str, Any]) -> None:
        pass


class DebugCon:
    """Bytes written to 0xE9 appear on the host console; reads return 0xE9 (QEMU's readback)."""

    name = "debugcon"
    ports = (0xE9,)

    def __init__(self, ctx: BoardContext, output: Callable[[bytes], None]) -> None:
        self.output = output

    def io_read(self, port: int, size: int) -> int:
        return 0xE9

    def io_write(self, port: int, size: int, value: int) -> None:
        self.output(bytes([value & 0xFF]))

    def get_state(self) -> dict[str, Any]:
        return {}

    def set_state(self, state: dict[str, Any]) -> None:
        pass
