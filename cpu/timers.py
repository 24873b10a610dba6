"""Deadlines in virtual time (icount) that end executor slices exactly where a device needs them."""
from __future__ import annotations

from typing import Callable, Optional


class Timer:
    """One device deadline. `arm(icount)` schedules the callback, `cancel()` forgets it."""

    __slots__ = ("queue", "callback", "deadline", "name", "internal")

    def __init__(self, queue: "TimerQueue", name: str, callback: Callable[[int], None],
                 internal: bool = False) -> None:
        self.queue = queue
        self.name = name
        self.internal = internal
        self.callback = callback
        self.deadline: Optional[int] = None

    def arm(self, icount: int) -> None:
        """Fire the callback when virtual time reaches `icount` (never earlier than now)."""
        self.deadline = max(icount, self.queue.now())
        self.queue.changed(self.deadline)

    def cancel(self) -> None:
        self.deadline = None


class TimerQueue:
    """All device timers. The executor asks for the next deadline and fires what is due.

    A timer armed mid-slice before the slice's planned end calls `kick(deadline)` so the executor
    ends the running slice exactly at the new deadline."""

    def __init__(self, now: Callable[[], int]) -> None:
        self.now = now
        self.timers: list[Timer] = []
        self.kick: Callable[[int], None] = lambda deadline: None
        self.slice_end: Optional[int] = None

    def new(self, name: str, callback: Callable[[int], None], internal: bool = False) -> Timer:
        """Create a timer; names must be unique per board (they key snapshot state).

        Internal timers (digests, log flushes, snapshots) are bookkeeping the guest cannot see:
        they end slices but never wake a halted CPU."""
        timer = Timer(self, name, callback, internal)
        self.timers.append(timer)
        return timer

    def remove(self, timer: Timer) -> None:
        """Forget a timer whose owner is gone (a closed snapshot manager)."""
        self.timers.remove(timer)

    def changed(self, deadline: int) -> None:
        if self.slice_end is not None and deadline < self.slice_end:
            self.kick(deadline)

    def next_deadline(self, guest_only: bool = False) -> Optional[int]:
        best = None
        for t in self.timers:
            d = t.deadline
            if d is not None and (best is None or d < best) and not (guest_only and t.internal):
                best = d
        return best

    def fire_due(self, icount: int) -> None:
        """Run every callback whose deadline is at or before `icount`, in deadline then creation order."""
        while True:
            due = [t for t in self.timers if t.deadline is not None and t.deadline <= icount]
            if not due:
                return
            t = min(due, key=lambda t: t.deadline)
            when = t.deadline
            t.deadline = None
            t.callback(when)
