"""The `urr` launcher: QEMU-style options in, the guest's exit status out."""
from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Optional

from urr.signals import OUTPUT_CLOSED, StopSignals

if TYPE_CHECKING:
    from urr.session import Session

EXIT_USAGE = 2
EXIT_GUEST_FAULT = 4
EXIT_DIVERGENCE = 6
EXIT_INCOMPLETE = 8  # a replay reached the end of a log that has no end record


def say(message: str) -> None:
    print(f"urr: {message}", file=sys.stderr, flush=True)


def main(argv: Optional[list[str]] = None) -> int:
    # First, before the slow imports: a signal from here on ends the run as one in its middle does.
    signals = StopSignals()
    try:
        return _main(sys.argv[1:] if argv is None else argv, signals)
    except BrokenPipeError:  # `urr -h | true`: the reader went away; nothing more to say to it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return OUTPUT_CLOSED[0]
    finally:
        signals.ignore_from_now()


def _main(argv: list[str], signals: StopSignals) -> int:
    from cpu.loader import KernelError
    from replay.log import LogError
    from urr.options import USAGE, UsageError, parse_args
    from urr.session import Session, SessionError

    try:
        opts = parse_args(argv)
    except UsageError as e:
        say(str(e))
        return EXIT_USAGE
    if opts is None:
        print(USAGE, flush=True)
        return 0
    try:
        session = Session(opts)
    except (UsageError, KernelError, LogError, SessionError, ValueError, OSError) as e:
        say(str(e))
        return EXIT_USAGE
    try:
        if opts.gdb or opts.debugger:
            from debugger.launch import run_debugger
            try:
                signals.raise_interrupts()
            except KeyboardInterrupt:  # before the debugger started: end as it would
                session.close(None, signals.ending()[1])
                say(f"{signals.ending()[1]} at icount {session.machine.icount}; state {session.state_hash()}")
                return signals.ending()[0]
            return run_debugger(session, opts)
        signals.bind(session.machine.request_stop)
        return run_to_end(session, signals)
    except ValueError as e:  # closing failed (the snapshot catalog could not be completed)
        say(str(e))
        return EXIT_USAGE


def run_to_end(session: Session, signals: StopSignals) -> int:
    """Run the machine to its end, closing the recording whatever happens."""
    from cpu.machine import FAULT_REASON, GuestError
    from replay.log import LogError
    from replay.player import Divergence

    mode = session.opts.rr
    try:
        stop = session.run()
    except GuestError as e:
        session.close(None, f"{FAULT_REASON}{e}")
        say(f"{FAULT_REASON}{e}")
        return EXIT_GUEST_FAULT
    except Divergence as e:  # left open: nothing from the diverged state goes to the catalog
        say(str(e))
        return EXIT_DIVERGENCE
    except (LogError, ValueError) as e:
        session.close(None, f"error: {e}")
        say(str(e))
        return EXIT_USAGE
    if stop.reason == "interrupt":
        status, reason = OUTPUT_CLOSED if session.output_closed else signals.ending()
        session.close(None, reason)
        say(f"{reason} at icount {session.machine.icount}; state {session.state_hash()}")
        return status
    session.close(stop.status, stop.message or stop.reason)
    icount = session.machine.icount
    if mode == "record":
        say(f"recorded {icount} instructions to {session.opts.rrfile}; state {session.state_hash()}")
    elif mode == "replay":
        incomplete = stop.reason == "end" and session.player is not None and not session.player.finished
        if stop.reason == "end":
            what = "an incomplete recording" if incomplete else "the recording"
            say(f"replay reached the end of {what} at icount {icount}: {stop.message}")
        say(f"replayed {icount} instructions from {session.opts.rrfile}; state {session.state_hash()}")
        if incomplete:
            return EXIT_INCOMPLETE
    if stop.reason == "exit" and stop.status is not None:
        return stop.status
    return 0
