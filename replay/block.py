"""Block inputs: the sector data a guest reads from its disk.

The data itself is logged, so a replay needs neither the image nor its overlay; writes are
deterministic (they follow from the instruction stream) and are not logged."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from replay import log as L

if TYPE_CHECKING:
    from replay.seam import SeamCore  # which imports this module


class BlockInputs:
    def __init__(self, core: SeamCore) -> None:
        self.core = core

    def read(self, lba: int, count: int, produce: Callable[[], bytes]) -> bytes:
        return self.core.value(L.BLOCK, (lba, count), produce)
