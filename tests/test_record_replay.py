"""Record then replay every example guest: same serial output, exit status and final state."""
from __future__ import annotations

import hashlib
import os

import pytest

from tests.conftest import run_urr

GUESTS = ["hello", "ticks", "cpuloop", "disk", "clock", "corrupt"]


@pytest.mark.parametrize("name", GUESTS)
def test_replay_reproduces_recording(guests, disk_image, tmp_path, name):
    rr = str(tmp_path / f"{name}.rr")
    image_before = hashlib.sha256(open(disk_image, "rb").read()).hexdigest()
    rec = run_urr("-kernel", guests[name], "-drive", f"file={disk_image},format=raw",
                  "-icount", f"shift=7,rr=record,rrfile={rr},rrsnapshot=init")
    assert rec.status % 2 == 1, rec.err  # the guest's own isa-debug-exit status
    assert rec.out
    # Replay without the disk image: what the guest read comes from the log.
    rep = run_urr("-kernel", guests[name], "-icount", f"shift=7,rr=replay,rrfile={rr},rrsnapshot=init")
    assert rep.status == rec.status, rep.err
    assert rep.out == rec.out
    assert rep.state() == rec.state()
    # Recording never modifies the base image (the disk guest writes to it).
    assert hashlib.sha256(open(disk_image, "rb").read()).hexdigest() == image_before


def test_replay_without_snapshots(guests, tmp_path):
    rr = str(tmp_path / "ticks.rr")
    rec = run_urr("-kernel", guests["ticks"], "-icount", f"shift=7,rr=record,rrfile={rr}", "-snapshots", "off")
    rep = run_urr("-kernel", guests["ticks"], "-icount", f"shift=7,rr=replay,rrfile={rr}", "-snapshots", "off")
    assert (rep.status, rep.out, rep.state()) == (rec.status, rec.out, rec.state())
    assert not os.path.exists(rr + ".db")


def test_disk_guest_reads_through_irq_and_verifies(guests, disk_image, tmp_path):
    rec = run_urr("-kernel", guests["disk"], "-drive", f"file={disk_image},format=raw",
                  "-icount", f"shift=7,rr=record,rrfile={tmp_path / 'd.rr'}")
    assert rec.status == 33, rec.out + rec.err.encode()
    assert b"IRQ" in rec.out


def test_replay_reads_no_host_time(guests, tmp_path):
    """The clock guest's rdtsc and RTC values come from the log: replaying twice gives the same."""
    rr = str(tmp_path / "clock.rr")
    rec = run_urr("-kernel", guests["clock"], "-icount", f"shift=7,rr=record,rrfile={rr}")
    again = run_urr("-kernel", guests["clock"], "-icount", f"shift=7,rr=record,rrfile={tmp_path / 'c2.rr'}")
    first = run_urr("-kernel", guests["clock"], "-icount", f"shift=7,rr=replay,rrfile={rr}")
    second = run_urr("-kernel", guests["clock"], "-icount", f"shift=7,rr=replay,rrfile={rr}")
    assert first.out == second.out == rec.out
    assert again.out != rec.out  # a fresh recording sees a different host clock
