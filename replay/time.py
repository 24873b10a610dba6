"""Clock inputs: rdtsc/rdtscp, PIT counter reads, RTC registers."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from replay import log as L

if TYPE_CHECKING:
    from replay.seam import SeamCore  # which imports this module

SOURCES = {"tsc": 0, "pit": 1, "rtc": 2}


class TimeInputs:
    """`read(source, produce)`: the value a time source shows the guest at the current icount.

    Recording calls `produce()` (the host clock, or the device's own computation) and logs the
    result; replaying returns the logged value and never calls `produce`."""

    def __init__(self, core: SeamCore) -> None:
        self.core = core

    def read(self, source: str, produce: Callable[[], int]) -> int:
        return self.core.value(L.CLOCK, (SOURCES[source],), produce)
