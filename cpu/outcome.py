"""How a run of the machine ends: a stop it returns, or a guest error it raises, and the words
a recording's end record uses for each (a replay compares them)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

FAULT_REASON = "guest fault: "  # how a recording that ended in a guest fault says so (END record)
EXIT_REASON = "exit"  # the END record's reason when the guest exited (with its status)
TRUNCATED_REASON = "the log ends here, without an end record"


class GuestError(RuntimeError):
    """The guest did something the machine cannot continue from (a fault, a halt forever)."""

    def __init__(self, message: str, icount: int, rip: int) -> None:
        super().__init__(f"{message} (icount {icount}, rip {rip:#x})")
        self.icount = icount
        self.rip = rip


class RecordedFault(GuestError):
    """Replay: the guest fault the recording ended with, met again at its icount and RIP."""


@dataclass
class Stop:
    """Why `Machine.run` returned."""

    reason: str  # "exit" | "limit" | "end" | "interrupt", or what a debugger hook asked for ("breakpoint", ...)
    icount: int
    status: Optional[int] = None  # the guest's exit status, for "exit"
    message: str = ""
