"""Starting a debugger (GDB stub or console) on a session from the launcher's options."""
from __future__ import annotations

import signal
import sys
import threading
from typing import TYPE_CHECKING, Optional

from cpu.machine import FAULT_REASON, GuestError
from debugger.timeline import Stop, Timeline
from urr.cli import EXIT_GUEST_FAULT
from urr.options import Options
from urr.session import Session

if TYPE_CHECKING:
    from debugger.gdbstub import GdbServer


def make_timeline(session: Session) -> Timeline:
    timeline = Timeline(session.machine, session.snapshots, session.opts.rr == "replay")
    timeline.session = session  # for branching; the launcher closes it
    return timeline


def run_until_attached(server: GdbServer, timeline: Timeline) -> Stop:
    """Without -S the machine runs, as QEMU's does, until a GDB connects or the run ends.

    Ctrl-C meanwhile stops the run where the timeline stops for an attaching GDB, between two
    chunks, and is raised there as KeyboardInterrupt: raised wherever Python happened to be,
    it could cut a recording's log off half-way through an event."""
    done = threading.Event()
    ctrl_c = threading.Event()

    def on_sigint(*_: object) -> None:
        ctrl_c.set()
        timeline.interrupt()

    def watch() -> None:
        while not done.is_set():
            if server.client_waiting(0.05):
                timeline.interrupt()  # again until the run returns: starting a run clears it
                done.wait(0.01)
    watcher = threading.Thread(target=watch, name="gdb-attach", daemon=True)
    watcher.start()
    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        stop = timeline.cont()
    finally:
        signal.signal(signal.SIGINT, previous)
        done.set()
        watcher.join()
    if ctrl_c.is_set() and stop.reason == "interrupt":
        raise KeyboardInterrupt
    return stop


def run_debugger(session: Session, opts: Options) -> int:
    """Serve GDB (from the start with -S, else wherever it interrupts the run) or the console
    (from the start) until the user detaches or quits; returns the exit status: the guest's if
    the position is at its exit by then (a detach runs to the end first), 4 at a guest fault
    (see _fault_here), else 0; 6 for a replay
    the debugger changed and left so (see Timeline.off_recording), or whose run on diverged."""
    timeline = make_timeline(session)
    reason = "debugger session ended"
    status: Optional[int] = None
    try:
        if opts.gdb:
            from debugger.gdbstub import GdbServer
            from debugger.gdbwire import parse_gdb_address

            try:
                host, port = parse_gdb_address(opts.gdb)
            except ValueError as e:
                print(f"urr: {e}", file=sys.stderr)
                return 2
            server = GdbServer(timeline, host=host, port=port)
            try:
                server.listen()
            except OSError as e:
                print(f"urr: cannot listen on {host}:{port}: {e.strerror}", file=sys.stderr)
                return 2
            print(f"urr: waiting for gdb on {host}:{server.port}", file=sys.stderr, flush=True)
            # A recording whose guest exits before GDB comes ends as without -gdb; a replay
            # that reaches its end waits there (to be debugged backwards).
            if opts.freeze or run_until_attached(server, timeline).reason != "exited":
                status, reason = _serve(server, timeline, host)
        else:
            from debugger.console import Console

            Console(timeline, opts.kernel).cmdloop()
        fault = _fault_here(timeline) if status is None else None
        if fault is not None:  # left where the guest faulted: the run ends as that fault ends it
            status, reason = EXIT_GUEST_FAULT, f"{FAULT_REASON}{fault}"
            print(f"urr: {reason}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:  # Ctrl-C while no debugger is attached to take it
        reason = "interrupted"
        print(f"urr: interrupted at icount {timeline.icount}; state {session.state_hash()}", file=sys.stderr)
        return 130
    finally:
        session.close(timeline.exit_status, reason)
    if timeline.off_recording:
        print(f"urr: {timeline.divergence()}", file=sys.stderr, flush=True)
        return 6
    return status if status is not None else timeline.exit_status or 0


def _fault_here(timeline: Timeline) -> Optional[GuestError]:
    """The guest fault at the position, if the last run stopped at one and nothing moved or
    changed the machine since (Timeline.failure): leaving the debugger there (`kill`, the
    console's `quit`) ends the run with that fault, in the log's end record too, as without a
    debugger; else the end record would say only that the debugger's session ended."""
    failure = timeline.failure
    return failure if isinstance(failure, GuestError) and failure.icount == timeline.icount else None


def _serve(server: GdbServer, timeline: Timeline, host: str) -> tuple[Optional[int], str]:
    """GDB connections, one after another, until one detaches or kills: a dropped connection
    leaves the position as it is and waits for the next, as QEMU does. Returns the exit status
    a detach's run on decided (None: the usual), and the reason the run ended."""
    while True:
        how = server.serve_one()
        if how == "kill" or (how == "disconnect" and not timeline.replaying and timeline.exit_status is not None):
            return None, "debugger session ended"  # (GDB drops a recording whose guest exited)
        if how == "detach":
            if timeline.off_recording:
                return None, "debugger session ended"  # no run on: it is not the recording's
            stop = timeline.cont()
            if stop.reason != "fault":
                return None, "debugger session ended"
            print(f"urr: {stop.message}", file=sys.stderr, flush=True)
            if isinstance(timeline.failure, GuestError):
                return EXIT_GUEST_FAULT, f"{FAULT_REASON}{stop.message}"
            return 6, "debugger session ended"
        print(f"urr: gdb went away at icount {timeline.icount}; waiting for gdb on "
              f"{host}:{server.port} (Ctrl-C ends urr)", file=sys.stderr, flush=True)
