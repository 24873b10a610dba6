"""Guest RAM's dirty tracking, checked against a plain bytearray model of the same writes.

Snapshots and digests trust `Ram.sync()` to report every page whose content changed since the
previous sync (hot pages kept private included), so a missed page would be a snapshot that
restores the wrong memory."""
from __future__ import annotations

from hypothesis import given, settings, strategies as st

from cpu.ram import PAGE, Ram
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
            assert all(data == page_of(model, i) for i, data in reported.items())
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


def test_a_page_written_every_interval_stays_private_until_it_rests():
    """The stack-like page costs no faults while hot, and is cleaned once it stops changing."""
    ram = Ram(PAGES * PAGE)
    try:
        for n in range(3):
            ram.mm[5 * PAGE] = n + 1
            assert [i for i, _ in ram.sync()] == [5]
        assert 5 in ram._hot and ram.dirty_pages() == [5]  # still private: no re-fault
        assert ram.sync() == []  # not written since: nothing to report, and cleaned
        assert ram.dirty_pages() == [] and not ram._hot
        ram.mm[5 * PAGE] = 9
        assert [(i, d[0]) for i, d in ram.sync()] == [(5, 9)]
    finally:
        ram.close()


def test_tracker_hash_follows_ram_through_hot_pages():
    """The whole-RAM hash after many syncs equals one computed from scratch."""
    ram = Ram(PAGES * PAGE)
    tracker = PageTracker(ram)
    try:
        for n in range(20):
            ram.mm[2 * PAGE + n] = n + 1  # hot
            if n % 5 == 0:
                ram.mm[40 * PAGE] = n + 1  # now and then
            tracker.update()
        fresh = PageTracker(ram)
        fresh.load({i: page_digest(ram.page(i)) for i in range(PAGES) if any(ram.page(i))},
                   {page_digest(ram.page(i)): ram.page(i) for i in range(PAGES)})
        assert tracker.ram_hash == fresh.ram_hash
        assert tracker.hashes == fresh.hashes
    finally:
        ram.close()
