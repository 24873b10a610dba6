"""Random-number inputs: RDRAND/RDSEED values, which must never reach the guest unlogged."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable

from replay import log as L

if TYPE_CHECKING:
    from replay.seam import SeamCore  # which imports this module


def host_random64() -> int:
    return int.from_bytes(os.urandom(8), "little")


class EntropyInputs:
    def __init__(self, core: SeamCore) -> None:
        self.core = core

    def read(self, produce: Callable[[], int] = host_random64) -> int:
        return self.core.value(L.RANDOM, (), produce)
