"""Guest RAM's write tracking and page tree, checked against plain bytearray models.

Snapshots, digests and the reverse debugger's write index trust `Ram.dirty_pages()` to report every
page written since the previous look, same-value writes included (a superset is allowed), so a
missed page would be a snapshot that restores the wrong memory or a write the debugger cannot
find. Restores trust the tree comparison to find every page that differs."""
from __future__ import annotations

from hypothesis import given, settings, strategies as st

from cpu import pagetree
from cpu.pagetrack import PageTracker, _fold, page_digest
from replay.digest import unpack_pages
from cpu.ram import PAGE, Ram

PAGES = 4 * pagetree.FANOUT + 5  # leaves and middle nodes of more than one, and a partial one

page_index = st.sampled_from([0, 1, 63, 64, 200, PAGES - 1]) | st.integers(0, PAGES - 1)
# One step: some stores (page, offset, value), then a sync; sometimes a restore of a saved state.
stores = st.lists(st.tuples(page_index, st.integers(0, PAGE - 1),
                            st.sampled_from([0, 0xFF]) | st.integers(0, 255)), max_size=12)
steps = st.lists(st.tuples(stores, st.booleans(), st.booleans()), min_size=1, max_size=30)


def page_of(buf: bytearray | bytes, i: int) -> bytes:
    return bytes(buf[i * PAGE:(i + 1) * PAGE])


def hashes_of(buf: bytes) -> dict[int, bytes]:
    return {i: page_digest(page_of(buf, i)) for i in range(len(buf) // PAGE) if any(page_of(buf, i))}


def ram_hash(buf: bytes) -> int:
    """The whole-RAM digest hash, computed from scratch."""
    h = 0
    for i, d in hashes_of(buf).items():
        h ^= _fold(i, d)
    return h


@settings(max_examples=60, deadline=None)
@given(steps)
def test_sync_reports_every_written_page_and_restores_rewrite_what_differs(program):
    """Every page stored to since the last sync is reported (with its content's digest), also
    when the store left it as it was; the tracker's hashes, tree and digest follow the model;
    restoring a saved tree gives back exactly that RAM."""
    ram = Ram(PAGES * PAGE)
    tracker = PageTracker(ram)
    model = bytearray(PAGES * PAGE)
    saved: list[tuple[bytes, dict[bytes, bytes], bytes]] = []  # (root, nodes, RAM) of a save
    contents: dict[bytes, bytes] = {}
    try:
        for writes, save, restore in program:
            for page, offset, value in writes:
                ram.mm[page * PAGE + offset] = value
                model[page * PAGE + offset] = value
            tracker.update()
            written = {page for page, _, _ in writes}
            _, packed = tracker.take_digest()
            listed = unpack_pages(packed)
            if ram.exact:
                assert set(listed) == written
            else:
                assert set(listed) >= written
            hashes = dict(tracker.hashes())
            assert hashes == hashes_of(bytes(model))
            assert tracker.count == len(hashes)
            assert all(listed[p] == int.from_bytes(hashes.get(p, bytes(8))[:8], "little") for p in listed)
            assert tracker._ram_hash == ram_hash(bytes(model))
            assert ram.read(0, ram.size) == bytes(model)
            root, nodes = tracker.whole_tree()
            assert (root, nodes) == pagetree.build(hashes, PAGES)
            contents.update((h, page_of(model, i)) for i, h in hashes.items())
            if save:
                saved.append((root, nodes, bytes(model)))
            if restore and saved:
                root, nodes, image = saved[len(saved) // 2]
                rewritten = tracker.load_tree(root, nodes.__getitem__, contents.__getitem__)
                assert rewritten == sum(page_of(model, i) != page_of(image, i) for i in range(PAGES))
                model[:] = image
                assert ram.read(0, ram.size) == image
                assert dict(tracker.hashes()) == hashes_of(image)
                assert tracker.count == len(hashes_of(image))
                assert tracker.root() == root
                assert tracker.take_digest()[0] == ram_hash(image)
                tracker.update()
                assert tracker.take_digest()[1] == b""  # the restore's own writes are not the guest's
    finally:
        ram.close()


@settings(max_examples=40, deadline=None)
@given(steps)
def test_a_copy_of_the_tree_fed_the_changes_makes_the_trackers_roots_and_nodes(program):
    """The catalog writer keeps a copy of the page tree and makes each snapshot's root and
    new nodes from the pages changed and their hashes (`take_snapshot_changes(tree=False)`,
    `PageContent.changes`): the roots are the tracker's own, the nodes all the new root names
    beyond the last one's, also across restores (the copy brought to the restored tree)."""
    ram = Ram(PAGES * PAGE)
    tracker = PageTracker(ram)
    tracker.for_snapshots = True
    copy = pagetree.PageTree(PAGES)
    known: dict[bytes, bytes] = {}  # every node made so far, by either
    saved: list[tuple[bytes, bytes]] = []  # (root, RAM) of a save
    contents: dict[bytes, bytes] = {}
    try:
        for writes, save, restore in program:
            for page, offset, value in writes:
                ram.mm[page * PAGE + offset] = value
            tracker.update()
            content, root, nodes = tracker.take_snapshot_changes(tree=False)
            assert (root, nodes) == (None, {})
            copy.set_many(*content.changes())
            made = copy.refresh()
            known.update(made)
            mine, whole = tracker.whole_tree()
            assert copy.root() == mine
            assert set(whole) <= set(known)  # nothing the tree names was left unmade
            image = ram.read(0, ram.size)
            contents.update((h, page_of(image, i)) for i, h in hashes_of(image).items())
            if save:
                saved.append((mine, image))
            if restore and saved:
                root, image = saved[len(saved) // 2]
                tracker.load_tree(root, known.__getitem__, contents.__getitem__)
                copy.changed_pages(root, known.__getitem__)
                assert copy.root() == root == tracker.root()
    finally:
        ram.close()


def test_digest_lists_same_value_writes():
    """A store of the value a page already held is a write: the digest lists it (the reverse
    debugger's write index looks for writes there), though no snapshot stores the page anew."""
    ram = Ram(PAGES * PAGE)
    tracker = PageTracker(ram)
    tracker.for_snapshots = True
    try:
        ram.mm[5 * PAGE] = 3
        tracker.update()
        assert list(unpack_pages(tracker.take_digest()[1])) == [5]
        assert list(tracker.take_snapshot_changes()[0].blobs) == [page_digest(ram.page(5))]
        ram.mm[5 * PAGE] = 3  # the same value again
        tracker.update()
        listed = list(unpack_pages(tracker.take_digest()[1]))
        assert listed == [5] if ram.exact else 5 in listed
        assert tracker.take_snapshot_changes()[0].blobs == {}  # content unchanged: nothing to store
        tracker.update()
        if ram.exact:
            assert tracker.take_digest()[1] == b""
    finally:
        ram.close()


def test_tree_changes_cost_what_changed():
    """A snapshot that changed k pages makes at most k leaves and k middle nodes; the root has
    one entry per 16 MiB of RAM."""
    pages = 1 << 16  # 256 MiB
    tree = pagetree.PageTree(pages)
    hashes = {i: page_digest(i.to_bytes(8, "little")) for i in range(0, pages, 3)}
    for p, h in hashes.items():
        tree.set(p, h)
    tree.refresh()
    assert len(tree.root()) == pages // pagetree.MID_PAGES * pagetree.HASH
    for p in (7, 7 + 1, 40_000, 65_000):
        hashes[p] = page_digest(b"new %d" % p)
        tree.set(p, hashes[p])
    made = tree.refresh()
    assert len(made) == 3 + 3  # pages 7 and 8 share a leaf; every leaf is under another middle node
    assert tree.root() == pagetree.build(hashes, pages)[0]


def test_exact_scan_and_pagemap_read_agree_on_written_pages():
    """The write-protect scan (one range per run of pages, many calls when runs are many) names
    the pages written; the fallback's pagemap read names all present pages, a superset."""
    pages = 2048
    ram = Ram(pages * PAGE)
    try:
        written = set(range(0, pages, 3)) | set(range(1000, 1100)) | {pages - 1}
        for i in sorted(written):
            ram.mm[i * PAGE + 7] = 1
        ram.read(1 * PAGE, 100)  # a read: not written
        scanner = ram._written
        present = scanner._read()
        if not ram.exact:
            assert set(present) >= written
            return
        assert scanner._ioctl() == sorted(written)
        assert set(present) >= written
        assert scanner._ioctl() == []  # protected again by the scan
        ram.mm[3 * PAGE] = 1  # the same value: still a write
        assert scanner._ioctl() == [3]
    finally:
        ram.close()
