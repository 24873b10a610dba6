"""Steps that go through interrupt handlers, as QEMU's stub does by default: a single step during
which the guest takes an interrupt runs on through the handler to the interrupted code, and a
step back from the instruction after a handler's return goes to the instruction before the
interrupt. `into` (the timeline's step_into_interrupts) makes steps stop in handlers instead.

Why a module of its own: this is the one part of stepping that knows about interrupts (the
machine's delivery hook, the recording's IRQ records, iretq frames); the timeline (debugger.
timeline), which owns the position, the breakpoints and the runs, asks it only whether a step
should go on and where a step back should land, and lends it its runs."""
from __future__ import annotations

import bisect
from typing import TYPE_CHECKING, Optional

from replay import log as L

if TYPE_CHECKING:
    from debugger.timeline import Stop, Timeline

NESTED_MAX = 4  # interrupts delivered before an iretq that it may be returning from


class InterruptSteps:
    """The interrupt side of one timeline's steps; see the module doc."""

    def __init__(self, timeline: Timeline) -> None:
        self.tl = timeline
        self.into = False  # True: steps stop in handlers
        self.delivered: Optional[tuple[int, int]] = None  # (RIP, RSP) the last interrupt left
        self._irq_icounts: Optional[list[int]] = None  # where the recording delivered interrupts
        timeline.machine.interrupt_hooks.append(self._on_delivery)

    def forget(self) -> None:
        """The machine left the recording (a branch): its interrupts no longer apply."""
        self._irq_icounts = None

    def text(self) -> str:
        """What the monitor and console commands that switch `into` say."""
        return ("steps stop in interrupt handlers (step_interrupts on)\n" if self.into
                else "steps go on through interrupt handlers (step_interrupts off)\n")

    def _on_delivery(self, vector: int) -> None:
        if self.delivered is None:
            self.delivered = (self.tl.machine.rip(), self.tl._rsp())

    def step_through(self, step: Stop) -> Stop:
        """A step's stop (delivered was cleared before it): if an interrupt was delivered after
        the stepped instruction, on through the handler to the interrupted code (unless `into`)."""
        if step.reason == "step" and self.delivered is not None and not self.into:
            return self.return_from_interrupt(*self.delivered)
        return step

    def return_from_interrupt(self, rip: int, rsp: int) -> Stop:
        """Run on until the interrupted code resumes at `rip` with its stack at `rsp`, unless a
        breakpoint or watchpoint in the handler stops it first."""
        tl = self.tl
        temporary = rip not in tl.breakpoints
        if temporary:
            tl.add_breakpoint(rip)
        try:
            while True:
                stop = tl._run(None, ignore_here=True)
                if stop.reason != "breakpoint":
                    return stop
                if stop.pc == rip and tl._rsp() == rsp:
                    return tl._stop("step")
                if stop.pc != rip:
                    return stop  # the user's, in the handler
        finally:
            if temporary:
                tl.remove_breakpoint(rip)

    def delivery_returning_here(self) -> Optional[int]:
        """At an iretq: the icount where the recording delivered the interrupt it returns from
        (the handler's first instruction). Else None, the position unchanged."""
        tl = self.tl
        iretq = tl.read_memory(tl.pc(), 2)  # REX.W (0x48-0x4f) CF; checked at every step back
        if iretq[0] & 0xF8 != 0x48 or iretq[1] != 0xCF:
            return None
        here, frame = tl.icount, tl.read_memory(tl._rsp(), 32)
        if self._irq_icounts is None:
            records = tl.machine.seam.core.player.records
            self._irq_icounts = [r.icount for r in records if r.kind == L.IRQ]
        newer = bisect.bisect_right(self._irq_icounts, here)
        for delivered in reversed(self._irq_icounts[max(0, newer - NESTED_MAX):newer]):
            if delivered < tl.start:
                break
            tl.seek(delivered)
            pushed = tl.read_memory(tl._rsp(), 32)
            if (pushed[:8], pushed[24:]) == (frame[:8], frame[24:]):  # the same RIP and RSP
                return delivered
        tl.seek(here)
        return None
