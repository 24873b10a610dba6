"""Signals that end a run: taken from the launcher's first line to its exit, never as a traceback.

Python's own SIGINT handling raises KeyboardInterrupt wherever the program happens to be: during
the imports, half-way through logging an event, or while the run is being closed (a second
Ctrl-C). Here a signal only sets a flag and asks the machine, once there is one, to stop at its
next slice boundary, where the log can end cleanly; a signal that came before the machine existed
stops it before its first instruction. A third signal ends the process at once (a way out of
whatever it may be stuck in; the log then lacks its end, as after a kill)."""
from __future__ import annotations

import os
import signal
from typing import Callable, Optional

# signal -> (exit status, the reason the log's end record and the last line give)
ENDINGS = {
    signal.SIGINT: (130, "interrupted"),
    signal.SIGTERM: (143, "terminated"),
    signal.SIGHUP: (129, "hangup"),
}
GIVE_UP_AFTER = 3  # signals after which urr exits at once, the run's end unwritten
OUTPUT_CLOSED = (141, "standard output closed")  # as SIGPIPE would end a program


class StopSignals:
    """The first ending signal received, and the machine's `request_stop` to pass it on to."""

    def __init__(self) -> None:
        self.received: Optional[int] = None
        self.count = 0
        self._stop: Optional[Callable[[], None]] = None
        for signum in ENDINGS:
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self.received is None:
            self.received = signum
        self.count += 1
        if self.count >= GIVE_UP_AFTER:  # whatever the run is stuck in, the user wants out
            os.write(2, f"urr: {ENDINGS[signum][1]} {self.count} times: exiting at once\n".encode())
            os._exit(ENDINGS[signum][0])
        if self._stop is not None:
            self._stop()

    def bind(self, request_stop: Callable[[], None]) -> None:
        """From now on a signal stops the machine; one that came already stops it at once."""
        self._stop = request_stop
        if self.received is not None:
            request_stop()

    def raise_interrupts(self) -> None:
        """For the debuggers, which take KeyboardInterrupt where they can end cleanly: every ending
        signal raises it from now on, and one received already raises it here."""
        def interrupt(signum: int, _frame: object) -> None:
            self.received = self.received or signum
            raise KeyboardInterrupt
        for signum in ENDINGS:
            signal.signal(signum, interrupt)
        if self.received is not None:
            raise KeyboardInterrupt

    def ignore_from_now(self) -> None:
        """The run has ended and its status is decided: later signals change nothing. Python
        restores the default action of signals it handled while it shuts down, so a second Ctrl-C
        landing then would otherwise kill the process and replace the status with the signal's."""
        for signum in ENDINGS:
            signal.signal(signum, signal.SIG_IGN)

    def ending(self) -> tuple[int, str]:
        """(exit status, reason) for the signal received (SIGINT's when none was)."""
        return ENDINGS.get(self.received or signal.SIGINT, ENDINGS[signal.SIGINT])
