"""Branching: leaving a replay at one position and going on live, recorded into a new file.

A branch is an ordinary recording that starts mid-run. Its log header copies the parent's
fingerprint (kernel, RAM size, shift, disk), has its own `recording_id`, and names where it came
from in `parent`: the parent's recording id and file, the icount of the branch point, the parent
snapshot it started from (from the command line) and the last TSC value the guest had seen. Its
catalog starts with the initial snapshot `branch`, the whole machine state at the branch point,
so the branch replays on its own from there (a replay of a branch log starts at `branch` unless
told another snapshot); the parent's log and catalog are never written.

Two ways in:
- `go_live(session, timeline, NEWFILE)`: a debugger's replay session becomes a recording at its
  current position, with whatever GDB or the console changed there (`monitor replay_branch`,
  the console's `branch`);
- `ParentSnapshot.open(opts, ...)`: `urr ... rr=record,rrfile=NEW.rr -loadvm NAME -branch-from
  OLD.rr` starts a recording from a snapshot of another recording.

Every check that can refuse a branch runs before anything is written."""
from __future__ import annotations

import dataclasses
import os
import uuid
from typing import TYPE_CHECKING, Any, Optional

from cpu.disk import DiskImage
from cpu.machine import Machine
from replay import log as L
from replay.player import Player
from replay.time import SOURCES

if TYPE_CHECKING:  # the snapshot modules load only for a branch (urr.session imports this module)
    from cpu.loader import Kernel
    from debugger.timeline import Timeline
    from snapshots.catalog import Catalog, Snapshot
    from urr.options import Options
    from urr.session import Session

BRANCH_SNAPSHOT = "branch"  # the initial snapshot of every branch: where its replay starts


class BranchError(ValueError):
    """A branch that cannot be made; one line for the user, and nothing was written."""


def lineage(config: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The `parent` entry of a log header: None for a recording that is not a branch."""
    parent = config.get("parent")
    return parent if isinstance(parent, dict) else None


def _same_file(a: str, b: str) -> bool:
    if os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


def check_target(rrfile: str, parent_rrfile: str, overwrite: bool) -> None:
    """Refuse a branch file that is the parent's (log or catalog), or that exists without consent."""
    if not rrfile:
        raise BranchError("a branch needs a file name")
    ours = [rrfile, rrfile + ".db"]
    theirs = [parent_rrfile, parent_rrfile + ".db"]
    if any(_same_file(a, b) for a in ours for b in theirs):
        raise BranchError(f"cannot branch into {rrfile}: it is the parent recording's own file")
    if os.path.isdir(rrfile):
        raise BranchError(f"cannot branch into {rrfile}: it is a directory")
    existing = [path for path in ours if os.path.exists(path)]
    if existing and not overwrite:
        raise BranchError(f"{existing[0]} exists: give -f (monitor, console) or -overwrite "
                          "(command line) to replace it")
    directory = os.path.dirname(os.path.abspath(rrfile))
    if not os.path.isdir(directory):
        raise BranchError(f"cannot branch into {rrfile}: no directory {directory}")


def last_tsc(player: Player, config: dict[str, Any]) -> int:
    """The last TSC value the guest saw before the player's cursor: from the log's records, or
    (none there) what the log's own branch point had seen; 0 if it never read one."""
    for rec in reversed(player.records[:player.pos]):
        if rec.kind == L.CLOCK and rec.fields[0] == SOURCES["tsc"]:
            return rec.fields[1]
    parent = lineage(config)
    return int(parent.get("tsc", 0)) if parent else 0


def branch_config(parent_config: dict[str, Any], parent_rrfile: str, icount: int,
                  snapshot: Optional[str], tsc: int) -> dict[str, Any]:
    """The branch's log header: the parent's fingerprint, a new id, and where it came from."""
    config = {k: v for k, v in parent_config.items() if k != "parent"}
    config["recording_id"] = uuid.uuid4().hex  # names the files, never reaches the guest
    config["parent"] = {"recording_id": parent_config.get("recording_id"), "rrfile": parent_rrfile,
                        "icount": icount, "snapshot": snapshot, "tsc": tsc}
    return config


def _open_writer(rrfile: str, config: dict[str, Any], icount: int) -> L.LogWriter:
    try:
        return L.LogWriter(rrfile, config, start_icount=icount)
    except L.LogError as e:
        raise BranchError(str(e)) from None


# -- from a debugger ----------------------------------------------------------------------------

def go_live(session: Session, timeline: Timeline, rrfile: str, overwrite: bool = False) -> str:
    """Turn the replay under `timeline` into a recording into `rrfile` at the current position,
    state as it is now (registers and memory changed from the debugger included). Returns a
    line saying what was done."""
    opts, machine = session.opts, session.machine
    player = session.player
    if opts.rr != "replay" or player is None:
        raise BranchError("branching needs a replay (rr=replay); this is a recording")
    if timeline.exit_status is not None or machine.exit_status is not None:
        raise BranchError(f"the guest has exited at icount {machine.icount}: go back before its exit to branch")
    check_target(rrfile, opts.rrfile, overwrite)
    base: Optional[DiskImage] = None
    if machine.disk is not None:
        if not opts.drive:
            raise BranchError("the recording has a disk: a branch reads it live, so start the replay "
                              "with -drive IMG (the recorded image)")
        base = DiskImage(opts.drive)  # the session checked it is the recorded image
    tsc = last_tsc(player, session.config)
    config = branch_config(session.config, opts.rrfile, machine.icount, None, tsc)
    writer = _open_writer(rrfile, config, machine.icount)
    # Nothing can refuse the branch from here on.
    if session.snapshots is not None:
        session.snapshots.close()  # the parent's catalog: complete with what this replay added
        session.snapshots = None
    machine.seam.record_into(writer)
    machine.sleep = opts.sleep
    machine.continue_tsc(tsc)
    if base is not None:
        machine.disk.attach_base(base)
    session.go_live(dataclasses.replace(opts, rr="record", rrfile=rrfile, rrsnapshot=BRANCH_SNAPSHOT,
                                        loadvm=None), writer, config)
    timeline.went_live(session.snapshots)
    return (f"branched at icount {machine.icount} into {rrfile}, recording from here "
            f"(parent {opts.rrfile}; snapshot '{BRANCH_SNAPSHOT}')")


# -- from the command line ----------------------------------------------------------------------

@dataclasses.dataclass
class ParentSnapshot:
    """A snapshot of another recording, checked to be a valid start for a branch recording."""

    config: dict[str, Any]  # the branch's log header
    snapshot: Snapshot
    catalog: Catalog  # open (read only) until the snapshot is restored
    tsc: int

    @property
    def icount(self) -> int:
        return self.snapshot.icount

    @classmethod
    def open(cls, opts: Options, kernel: Kernel, disk: Optional[DiskImage]) -> "ParentSnapshot":
        """Check everything a branch from `opts.branch_from` at `opts.loadvm` needs; raise
        BranchError (or LogError for an unreadable parent log) without writing anything."""
        from snapshots.catalog import Catalog, CatalogError
        from urr.session import module_hashes

        parent_rrfile, name = opts.branch_from, opts.loadvm
        assert parent_rrfile is not None and name is not None and opts.rrfile is not None
        player = Player(L.LogReader(parent_rrfile))
        parent_config = player.reader.config
        refused = f"cannot branch from {parent_rrfile}"
        if parent_config.get("kernel_sha256") != kernel.sha256:
            raise BranchError(f"{refused}: -kernel {opts.kernel} differs from its kernel "
                              f"{parent_config.get('kernel', '?')} (sha256 mismatch)")
        for what, ours, key in (("RAM size", opts.ram_size, "ram_size"), ("icount shift", opts.shift, "shift")):
            if parent_config.get(key) != ours:
                raise BranchError(f"{refused}: {what} {ours} differs from its {parent_config.get(key)}")
        if parent_config.get("modules", []) != module_hashes(kernel):
            raise BranchError(f"{refused}: -initrd modules differ from its own")
        recorded_disk = parent_config.get("disk")
        if (recorded_disk is None) != (disk is None) or (
                disk is not None and disk.identity().get("sha256") != recorded_disk.get("sha256")):
            wanted = "no -drive" if recorded_disk is None else f"-drive with its image ({recorded_disk.get('path')})"
            raise BranchError(f"{refused}: it was recorded with {wanted}")
        check_target(opts.rrfile, parent_rrfile, opts.overwrite)
        try:
            catalog = Catalog.open(f"{parent_rrfile}.db", parent_config["recording_id"], create=False)
        except CatalogError as e:
            raise BranchError(f"{refused}: {e}") from None
        try:
            if name not in {i.name for i in catalog.list()}:
                raise BranchError(f"{refused}: no snapshot named '{name}' in {catalog.path}")
            snapshot = catalog.load(name)
            if snapshot.devices.get("exit_status") is not None:
                raise BranchError(f"{refused}: the guest has exited at its snapshot '{name}'")
            player.seek(L.Position(snapshot.log_pos["chunk"], snapshot.log_pos["index"]))
        except (CatalogError, L.LogError) as e:
            catalog.close()
            raise BranchError(f"{refused}: {e}") from None
        except BaseException:
            catalog.close()
            raise
        tsc = last_tsc(player, parent_config)
        config = branch_config(parent_config, parent_rrfile, snapshot.icount, name, tsc)
        return cls(config, snapshot, catalog, tsc)

    def restore(self, machine: Machine) -> None:
        """Put the machine at the snapshot, then let go of the parent's catalog."""
        from snapshots.manager import SnapshotManager
        from snapshots.state import restore

        try:  # the snapshot and log-flush timers are the session's, armed by it afresh
            restore(machine, self.snapshot, self.catalog.get_blob, SnapshotManager.OWN_TIMERS)
        finally:
            self.catalog.close()
        machine.continue_tsc(self.tsc)
