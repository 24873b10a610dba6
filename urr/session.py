"""A run of the machine in one mode: plain, record or replay, from the launcher's options.

The session owns what sits around the machine: the event log (written or read), the recording's
fingerprint and its check, the host's serial input, the snapshot catalog, and the end of the run."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import time
import uuid
from typing import BinaryIO, Callable, Optional

import xxhash

from cpu.disk import DiskImage
from cpu.loader import Kernel, load_kernel
from cpu.machine import Machine, Stop
from replay import log as L
from replay.char import HostInput
from replay.player import Player
from replay.seam import Seam, SeamCore
from urr.branch import BRANCH_SNAPSHOT, ParentSnapshot, lineage
from urr.options import Options

FLUSH_CHECK = 1 << 20  # icounts between checks whether the log should be flushed
FLUSH_HOST_SECONDS = 1.0  # a recording killed loses at most about this much host time of log
FLUSH_BYTES = 1 << 16


class SessionError(ValueError):
    """Bad input to a session (files, a mismatched recording); one line for the user."""


def guest_cmdline(opts: Options) -> str:
    """The guest's command line: the kernel's file name, then -append (as QEMU gives Multiboot)."""
    name = os.path.basename(opts.kernel)
    return f"{name} {opts.append}" if opts.append else name


def module_hashes(kernel: Kernel) -> list[dict]:
    return [{"cmdline": m.cmdline, "sha256": hashlib.sha256(m.data).hexdigest()} for m in kernel.modules]


def recording_config(opts: Options, kernel: Kernel, disk: Optional[DiskImage]) -> dict:
    """The fingerprint a replay must match, plus an id that ties catalogs to this recording."""
    return {
        "urr_log": L.VERSION,
        "recording_id": uuid.uuid4().hex,  # host randomness that only names the file, never the guest
        "kernel_sha256": kernel.sha256,
        "kernel": os.path.basename(opts.kernel),
        "cmdline": guest_cmdline(opts),
        "modules": module_hashes(kernel),
        "ram_size": opts.ram_size,
        "shift": opts.shift,
        "cpu_model": "westmere",
        "disk": None if disk is None else {"sectors": disk.sectors, **disk.identity()},
        # Digest records list every page that may have been written since the previous digest,
        # same-value writes included (older logs: only pages whose content changed).
        "digest_pages": "written",
    }


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def config_problem(config: dict[str, object]) -> Optional[str]:
    """What is wrong with a header's configuration, or None: every field a replay believes is
    checked for its type and range (a CRC only says the bytes are the ones written)."""
    def hex_text(value: object, digits: Optional[int] = None) -> bool:
        return (isinstance(value, str) and bool(value) and (digits is None or len(value) == digits)
                and all(c in "0123456789abcdef" for c in value))
    if not hex_text(config.get("recording_id")):
        return "recording_id is not a hex string"
    if not hex_text(config.get("kernel_sha256"), 64):
        return "kernel_sha256 is not a sha256"
    if not isinstance(config.get("kernel", ""), str):
        return "kernel is not a file name"
    ram = config.get("ram_size")
    if not _is_int(ram) or ram < (1 << 20) or ram % 4096:
        return "ram_size is not a RAM size"
    shift = config.get("shift")
    if not _is_int(shift) or not 0 <= shift <= 10:
        return "shift is not from 0 to 10"
    if not isinstance(config.get("cmdline", ""), str):
        return "cmdline is not a command line"
    modules = config.get("modules", [])
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        return "modules is not a list of modules"
    disk = config.get("disk")
    if disk is not None:
        if not isinstance(disk, dict) or not _is_int(disk.get("sectors")) or disk["sectors"] < 1 \
                or not hex_text(disk.get("sha256"), 64):
            return "disk is neither null nor a disk's sectors and sha256"
    return None


def check_replay_config(config: dict, opts: Options, kernel: Kernel) -> None:
    """Refuse a replay whose kernel, modules, -append, RAM size or shift differ from the
    recording's. The command line itself comes from the recording (the kernel's file name in
    it is the recorded one)."""
    problem = config_problem(config)
    if problem:
        raise SessionError(f"{opts.rrfile}: log header is corrupt ({problem})")
    problems = []
    if config.get("kernel_sha256") != kernel.sha256:
        problems.append(f"kernel differs from the recorded {config.get('kernel', '?')} (sha256 mismatch)")
    if config.get("ram_size") != opts.ram_size:
        problems.append(f"RAM size {opts.ram_size >> 20}M differs from the recorded "
                        f"{int(config.get('ram_size', 0)) >> 20}M")
    if config.get("modules", []) != module_hashes(kernel):
        problems.append("-initrd modules differ from the recorded ones")
    recorded_append = config.get("cmdline", "").partition(" ")[2]
    if opts.append is not None and opts.append != recorded_append:
        problems.append(f"-append '{opts.append}' differs from the recorded '{recorded_append}'")
    if config.get("shift") != opts.shift:
        problems.append(f"icount shift {opts.shift} differs from the recorded {config.get('shift')}")
    if problems:
        raise SessionError(f"cannot replay {opts.rrfile}: " + "; ".join(problems))


def check_writable(path: str, refusal: str) -> None:
    """Refuse, before anything is created, an output file that could not be written: one line,
    `refusal` (e.g. 'cannot write rrfile') and the path and reason."""
    if os.path.isdir(path):
        raise SessionError(f"{refusal} {path}: it is a directory")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise SessionError(f"{refusal} {path}: no directory {directory}")
    if not os.access(path if os.path.exists(path) else directory, os.W_OK):
        raise SessionError(f"{refusal} {path}: permission denied")


class Session:
    """Everything is validated (options, kernel, disk, the log to replay, the catalog to use)
    before any file is created, truncated or changed: a refused run leaves the files as they were."""

    def __init__(self, opts: Options, out: Optional[BinaryIO] = None, stdin_fd: Optional[int] = 0) -> None:
        self.opts = opts
        self.out = out if out is not None else sys.stdout.buffer
        self.output_closed = False
        self.tiers = self._snapshot_tiers()
        self.stdin_fd = stdin_fd
        kernel = load_kernel(opts.kernel, opts.ram_size, opts.initrd)
        self.writer: Optional[L.LogWriter] = None
        self.player: Optional[Player] = None
        parent: Optional[ParentSnapshot] = None  # what a branch from the command line starts from
        disk = DiskImage(opts.drive) if opts.drive else None
        if opts.rr == "replay":
            self.player = Player(L.LogReader(opts.rrfile))
            self.config = self.player.reader.config
            check_replay_config(self.config, opts, kernel)
            recorded_disk = self.config.get("disk")
            if recorded_disk is None and disk is not None:
                raise SessionError(f"cannot replay {opts.rrfile}: it was recorded without a disk, "
                                   f"not with -drive {opts.drive}")
            if recorded_disk is not None:
                if disk is not None and disk.identity().get("sha256") != recorded_disk.get("sha256"):
                    raise SessionError(f"cannot replay {opts.rrfile}: -drive {opts.drive} is not the recorded disk")
                disk = DiskImage.without_base(int(recorded_disk["sectors"]))
            self._check_replay_catalog()
        elif opts.rr == "record":
            if opts.branch_from:
                parent = ParentSnapshot.open(opts, kernel, disk)
                self.config = parent.config
                opts = self.opts = dataclasses.replace(opts, rrsnapshot=BRANCH_SNAPSHOT)
            else:
                self.config = recording_config(opts, kernel, disk)
            check_writable(opts.rrfile, "cannot write rrfile")
        else:
            self.config = {}
        if opts.serial.startswith("file:"):
            check_writable(opts.serial[5:], "cannot open serial output")
        # Validated: from here on files are made.
        if opts.rr == "record":
            self.writer = L.LogWriter(opts.rrfile, self.config, start_icount=parent.icount if parent else 0)
        self.seam = Seam(SeamCore(opts.rr, lambda: 0, self.writer, self.player))
        self.serial_file: Optional[BinaryIO] = None
        self.machine = Machine(kernel, opts.ram_size, opts.shift, self.seam, disk,
                               serial_out=self._serial_sink(), debugcon_out=self._write_out,
                               sleep=opts.sleep and opts.rr != "replay",
                               cmdline=self.config.get("cmdline", guest_cmdline(opts)))
        if parent is not None:
            parent.restore(self.machine)
        self.snapshots = None
        if opts.rr != "plain" and (opts.snapshots != "off" or opts.rrsnapshot or opts.loadvm
                                   or opts.gdb or opts.debugger or lineage(self.config)):
            self._open_catalog()  # forks the catalog writer: before any thread of ours starts
        self._attach_serial_input()
        self._start_flushing()

    def _attach_serial_input(self) -> None:
        if self.opts.serial == "stdio" and self.opts.rr != "replay" and self.stdin_fd is not None:
            self.seam.char.attach(HostInput(self.stdin_fd))

    def _start_flushing(self) -> None:
        """A recording's log is flushed every so often, so a killed one loses little."""
        if self.writer is not None:
            self._last_flush = time.monotonic()
            self.flush_timer = self.machine.timers.new("log-flush", self._maybe_flush, internal=True)
            self.flush_timer.arm(self.machine.icount + FLUSH_CHECK)

    def go_live(self, opts: Options, writer: L.LogWriter, config: dict) -> None:
        """Go on as a recording into `writer` (a branch, once urr.branch.go_live has switched the
        machine over): its catalog with the initial snapshot, host input, log flushes."""
        self.opts, self.writer, self.player, self.config = opts, writer, None, config
        self.tiers = self._snapshot_tiers()  # a recording's policy now
        self._open_catalog()
        self._attach_serial_input()
        self._start_flushing()

    @property
    def catalog_path(self) -> str:
        return f"{self.opts.rrfile}.db"

    def _snapshot_tiers(self) -> Optional[list]:
        from snapshots.manager import parse_tiers
        from snapshots.policy import default_policy

        text = self.opts.snapshots or default_policy(self.opts.rr == "record")
        try:
            return None if text == "off" else parse_tiers(text)
        except ValueError as e:
            raise SessionError(str(e)) from None

    def _replay_start(self) -> Optional[str]:
        """The snapshot a replay starts from. A branch's log starts at its branch point: its
        replay starts at that snapshot unless told another."""
        return self.opts.loadvm or self.opts.rrsnapshot or (BRANCH_SNAPSHOT if lineage(self.config) else None)

    def _check_replay_catalog(self) -> None:
        """A replay's catalog, read without changing it: this recording's, holding the snapshot to
        start from (a replay adds to it, or makes it if there is none and none is asked for)."""
        from snapshots.catalog import Catalog, CatalogError

        start = self._replay_start()
        if not start and not os.path.exists(self.catalog_path):
            return
        try:
            with Catalog.open_existing(self.catalog_path, cache_blobs=0, read_only=True) as catalog:
                if catalog.recording_id != self.config["recording_id"]:
                    raise SessionError(f"catalog {self.catalog_path} belongs to another recording "
                                       f"({catalog.recording_id}, not {self.config['recording_id']})")
                info = next((i for i in catalog.list() if i.name == start), None) if start else None
        except CatalogError as e:
            raise SessionError(str(e)) from None
        if start and info is None:
            raise SessionError(f"no snapshot named '{start}' in {self.catalog_path}")
        if info is not None and info.icount > self.player.end_icount:
            raise SessionError(f"snapshot '{start}' (icount {info.icount}) is past the end of "
                               f"{self.opts.rrfile} (icount {self.player.end_icount}): its recording was cut short")

    def _open_catalog(self) -> None:
        """The snapshot catalog beside the rrfile: made afresh when recording, reused in replay."""
        from snapshots.catalog import CatalogError
        from snapshots.manager import SnapshotManager

        opts = self.opts
        recording = opts.rr == "record"
        if recording:
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(self.catalog_path + suffix):
                    os.remove(self.catalog_path + suffix)
        try:
            self.snapshots = SnapshotManager(self.machine, self.catalog_path, self.config["recording_id"],
                                             self.tiers)
        except CatalogError as e:
            raise SessionError(str(e)) from None
        if opts.gdb or opts.debugger:  # from the start: what the first restore reads is kept too
            self.snapshots.expect_restores()
        try:
            if recording:
                if opts.rrsnapshot:
                    self.snapshots.take(opts.rrsnapshot, "initial")
                return
            start = self._replay_start()
            if start:
                if start not in self.snapshots.infos:
                    raise SessionError(f"no snapshot named '{start}' in {self.catalog_path}")
                self.snapshots.restore(start)
        except BaseException:
            # The writer's process waits for the end of its pipe: end it now, not whenever the
            # garbage collector gets to this half-made session (the exit waits for that child).
            snapshots, self.snapshots = self.snapshots, None
            snapshots.close()
            raise

    def _write_out(self, data: bytes) -> None:
        """Guest output to standard output. When its reader has gone the run ends, as at a
        Ctrl-C, at the next slice boundary (the log gets its end record there)."""
        if self.output_closed:
            return
        try:
            self.out.write(data)
            self.out.flush()
        except BrokenPipeError:
            self.output_closed = True
            if self.out is sys.stdout.buffer:  # no second error when Python flushes it at exit
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            self.machine.request_stop()

    def _serial_sink(self) -> Callable[[bytes], None]:
        serial = self.opts.serial
        if serial == "stdio":
            return self._write_out
        if serial.startswith("file:"):
            try:
                self.serial_file = open(serial[5:], "wb")
            except OSError as e:
                raise SessionError(f"cannot open serial output {serial[5:]}: {e.strerror}") from None
            f = self.serial_file

            def to_file(data: bytes) -> None:
                f.write(data)
                f.flush()
            return to_file
        return lambda data: None

    def _maybe_flush(self, when: int) -> None:
        assert self.writer is not None
        if len(self.writer.buf) > FLUSH_BYTES or time.monotonic() - self._last_flush > FLUSH_HOST_SECONDS:
            self.writer.flush(self.machine.icount)
            self._last_flush = time.monotonic()
        self.flush_timer.arm(self.machine.icount + FLUSH_CHECK)

    def run(self, until: Optional[int] = None) -> Stop:
        """Run the machine on (Machine.run). A replay stops at `until` or at its log's end, and
        only a debugger could stop it elsewhere: its snapshots are told so (stops_at)."""
        if self.snapshots is not None and self.player is not None:
            end = self.player.end_icount
            self.snapshots.stops_at(end if until is None else min(until, end))
        return self.machine.run(until)

    def state_hash(self) -> str:
        """A hash of the final machine state: registers and all of RAM."""
        m = self.machine
        h = xxhash.xxh3_128()
        h.update(repr(sorted(m.registers.read().items())).encode())
        h.update(m.ram.view)
        return h.hexdigest()

    def close(self, status: Optional[int], reason: str) -> None:
        """End the run: the recording gets its end record and its last chunk."""
        if self.writer is not None:
            self.machine.finish(status, reason)
            self.writer.close(self.machine.icount)
            self.writer = None
        if self.snapshots is not None:
            self.snapshots.close()
            self.snapshots = None
        if self.serial_file is not None:
            self.serial_file.close()
