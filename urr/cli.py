"""The `urr` launcher: QEMU-style options in, the guest's exit status out."""
from __future__ import annotations

import signal
import sys
from typing import Optional

from cpu.loader import KernelError
from cpu.machine import FAULT_REASON, GuestError
from replay.log import LogError
from replay.player import Divergence
from urr.options import USAGE, UsageError, parse_args
from urr.session import Session, SessionError

EXIT_USAGE = 2
EXIT_GUEST_FAULT = 4
EXIT_DIVERGENCE = 6


def say(message: str) -> None:
    print(f"urr: {message}", file=sys.stderr, flush=True)


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        opts = parse_args(argv)
    except UsageError as e:
        say(str(e))
        return EXIT_USAGE
    if opts is None:
        print(USAGE)
        return 0
    try:
        session = Session(opts)
    except (UsageError, KernelError, LogError, SessionError, ValueError, OSError) as e:
        say(str(e))
        return EXIT_USAGE
    try:
        if opts.gdb or opts.debugger:
            from debugger.launch import run_debugger
            return run_debugger(session, opts)
        return run_to_end(session)
    except ValueError as e:  # closing failed (the snapshot catalog could not be completed)
        say(str(e))
        return EXIT_USAGE


def run_to_end(session: Session) -> int:
    """Run the machine to its end, closing the recording whatever happens."""
    mode = session.opts.rr
    # Ctrl-C stops the machine at the next slice boundary, where the log can end cleanly.
    previous = signal.signal(signal.SIGINT, lambda *_: session.machine.request_stop())
    try:
        stop = session.run()
    except GuestError as e:
        session.close(None, f"{FAULT_REASON}{e}")
        say(f"{FAULT_REASON}{e}")
        return EXIT_GUEST_FAULT
    except Divergence as e:
        say(str(e))
        return EXIT_DIVERGENCE
    except (LogError, ValueError) as e:
        session.close(None, f"error: {e}")
        say(str(e))
        return EXIT_USAGE
    finally:
        signal.signal(signal.SIGINT, previous)
    if stop.reason == "interrupt":
        session.close(None, "interrupted")
        say(f"interrupted at icount {session.machine.icount}")
        return 130
    session.close(stop.status, stop.message or stop.reason)
    icount = session.machine.icount
    if mode == "record":
        say(f"recorded {icount} instructions to {session.opts.rrfile}; state {session.state_hash()}")
    elif mode == "replay":
        if stop.reason == "end":
            say(f"replay reached the end of the recording at icount {icount}: {stop.message}")
        say(f"replayed {icount} instructions from {session.opts.rrfile}; state {session.state_hash()}")
    if stop.reason == "exit" and stop.status is not None:
        return stop.status
    return 0
