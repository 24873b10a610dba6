"""Asynchronous events: interrupt deliveries, HLT wake-ups (virtual-clock jumps), the machine's end.

Recording logs where the executor delivered each interrupt and where a halted CPU woke; replay
makes the executor do exactly the same at exactly the same icounts."""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from replay import log as L

if TYPE_CHECKING:
    from replay.seam import SeamCore  # which imports this module


class AsyncEvents:
    def __init__(self, core: SeamCore) -> None:
        self.core = core

    def irq(self, vector: int) -> None:
        self.core.log(L.IRQ, vector)

    def wake(self, to_icount: int) -> None:
        self.core.log(L.WAKE, to_icount - self.core.now())

    def end(self, status: Optional[int], reason: str) -> None:
        self.core.log(L.END, -1 if status is None else status, reason.encode())

    def before_wait(self) -> None:
        """Recording: the machine is about to wait for the host; make the log durable first."""
        if self.core.writer is not None:
            self.core.writer.flush(self.core.now())

    def next(self) -> Optional[L.Record]:
        """Replay: the next logged asynchronous event, or None when the log has no more."""
        return self.core.player.next_async()
