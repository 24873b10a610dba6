"""Guest RAM's dirty tracking, checked against a plain bytearray model of the same writes.

Snapshots and digests trust `Ram.sync()` to report every page whose content changed since the
previous sync (hot pages kept private included), so a missed page would be a snapshot that
restores the wrong memory."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from cpu.ram import IDLE_SYNCS, MAX_PRIVATE, PAGE, Ram
from cpu.pagetrack import PageTracker, page_digest

PAGES = 64

# One step: some stores (page, offset, value), then a sync; sometimes a load of a snapshot.
stores = st.lists(st.tuples(st.sampled_from([0, 1, 2, 7, 63]) | st.integers(0, PAGES - 1),
                            st.integers(0, PAGE - 1), st.sampled_from([0, 0xFF]) | st.integers(0, 255)),
                  max_size=12)
steps = st.lists(st.tuples(stores, st.booleans()), min_size=1, max_size=40)


def page_of(buf: bytearray | bytes, i: int) -> bytes:
    return bytes(buf[i * PAGE:(i + 1) * PAGE])


@settings(max_examples=60, deadline=None)
@given(steps)
def test_sync_reports_every_changed_page_with_its_content(program):
    ram = Ram(PAGES * PAGE)
    model = bytearray(PAGES * PAGE)
    synced = bytes(model)
    try:
        for writes, load in program:
            for page, offset, value in writes:
                ram.mm[page * PAGE + offset] = value
                model[page * PAGE + offset] = value
            reported = dict(ram.sync())
            changed = {i for i in range(PAGES) if page_of(model, i) != page_of(synced, i)}
            written = {page for page, _, _ in writes}
            assert changed <= set(reported) <= written
            assert all(digest == page_digest(page_of(model, i)) for i, digest in reported.items())
            assert ram.read(0, ram.size) == bytes(model)
            synced = bytes(model)
            if load:  # a restore: RAM becomes exactly the loaded pages
                ram.load_pages({3: b"\x5a" * PAGE})
                model[:] = bytes(PAGES * PAGE)
                model[3 * PAGE:4 * PAGE] = b"\x5a" * PAGE
                synced = bytes(model)
                assert ram.read(0, ram.size) == bytes(model)
    finally:
        ram.close()


def test_a_written_page_stays_private_until_it_rests():
    """A page the guest keeps writing costs no faults: it stays private, reported only when its
    content changed, and is cleaned after IDLE_SYNCS syncs without a change."""
    ram = Ram(PAGES * PAGE)
    try:
        for n in range(3):
            ram.mm[5 * PAGE] = n + 1
            assert [i for i, _ in ram.sync()] == [5]
        ram.mm[5 * PAGE] = 3  # written, but with the content it had
        for n in range(IDLE_SYNCS - 1):
            assert ram.sync() == [] and ram.dirty_pages() == [5]  # still private: no re-fault
        assert ram.sync() == [] and ram.dirty_pages() == []  # rested: cleaned
        assert ram.read(5 * PAGE, 1) == b"\x03"
        ram.mm[5 * PAGE] = 9
        assert ram.sync() == [(5, page_digest(b"\x09" + bytes(PAGE - 1)))]
    finally:
        ram.close()


def test_private_pages_are_bounded():
    """Beyond MAX_PRIVATE private pages, the longest idle are cleaned, keeping syncs cheap."""
    pages = MAX_PRIVATE + 64
    ram = Ram(pages * PAGE)
    try:
        for i in range(pages):
            ram.mm[i * PAGE] = 1
        assert len(ram.sync()) == pages
        assert len(ram.dirty_pages()) == MAX_PRIVATE
        for i in range(pages):
            assert ram.read(i * PAGE, 1) == b"\x01"
    finally:
        ram.close()


def test_tracker_hash_follows_ram_through_hot_pages():
    """The whole-RAM hash, asked for after some of many syncs (it is folded only when asked),
    equals one computed from scratch, also for pages that go back to zero or to old content."""
    ram = Ram(PAGES * PAGE)
    tracker = PageTracker(ram)
    try:
        for n in range(40):
            ram.mm[2 * PAGE + n % 20] = n + 1  # hot
            if n % 5 == 0:
                ram.mm[40 * PAGE] = n % 10  # now and then, zero again every other time
            if n % 7 == 0:
                ram.mm[41 * PAGE] = 1 - ram.mm[41 * PAGE]  # back and forth between two contents
            tracker.update()
            if n % 3 == 0:
                fresh = PageTracker(ram)
                fresh.load({i: page_digest(ram.page(i)) for i in range(PAGES) if any(ram.page(i))},
                           {page_digest(ram.page(i)): ram.page(i) for i in range(PAGES)})
                assert tracker.take_digest()[0] == fresh.take_digest()[0], n
                assert tracker.hashes == fresh.hashes, n
    finally:
        ram.close()


def test_kernel_scan_and_pagemap_read_agree_on_written_pages():
    """PAGEMAP_SCAN (one range per run of pages, many calls when runs are many) and the
    8-byte-per-page pagemap read must name the same pages: written ones, not read-only ones."""
    pages = 2048
    ram = Ram(pages * PAGE)
    try:
        written = set(range(0, pages, 3)) | set(range(1000, 1100)) | {pages - 1}
        for i in sorted(written):
            ram.mm[i * PAGE + 7] = 1
        ram.read(1 * PAGE, 100)  # a read maps the file page: not written
        assert len(written) > 2 * 256  # more runs than one ioctl call returns
        scanner = ram._written
        if scanner.scan == scanner._read:
            pytest.skip("this kernel has no PAGEMAP_SCAN (before Linux 6.7)")
        assert scanner._ioctl() == scanner._read() == sorted(written)
        ram.sync()
        assert scanner._ioctl() == scanner._read() == sorted(ram._private)
    finally:
        ram.close()
