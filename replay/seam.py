"""The seam object handed to devices and the executor: one attribute per input class.

Mode "plain" runs with host inputs and logs nothing; "record" logs every input; "replay" supplies
every input from the log. Devices call the same methods in every mode."""
from __future__ import annotations

from typing import Callable


class PlainTime:
    def read(self, source: str, produce: Callable[[], int]) -> int:
        return produce()


class PlainBlock:
    def read(self, lba: int, count: int, produce: Callable[[], bytes]) -> bytes:
        return produce()


class PlainSeam:
    """No recording: every input comes straight from the host."""

    mode = "plain"

    def __init__(self) -> None:
        self.time = PlainTime()
        self.block = PlainBlock()
