"""Starting a debugger (GDB stub or console) on a session from the launcher's options."""
from __future__ import annotations

import sys

from debugger.timeline import Timeline
from urr.session import Session


def make_timeline(session: Session) -> Timeline:
    return Timeline(session.machine, session.snapshots, session.opts.rr == "replay")


def run_debugger(session: Session, opts) -> int:
    """Serve GDB or the console until the user detaches or quits; returns the exit status: the
    guest's if the position is at its exit by then (a detach runs to the end first), else 0."""
    timeline = make_timeline(session)
    try:
        if opts.gdb:
            from debugger.gdbstub import GdbServer, parse_gdb_address

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
            if server.serve_one() == "detach":
                timeline.cont()
        else:
            from debugger.console import Console

            Console(timeline, opts.kernel).cmdloop()
    finally:
        session.close(timeline.exit_status, "debugger session ended")
    return timeline.exit_status or 0
