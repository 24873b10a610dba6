"""Dense snapshots the catalog writer holds back until they outlive their thinning.

A recording, or a replay going forward, takes a periodic snapshot every 10 ms and keeps one per
100 ms once it is a second behind (snapshots.policy): the nine others were each stored (rows,
checks, a commit) and then deleted, and the garbage collection their deletion called for read
the whole catalog. In bigmem's dense recording that was ~40% of the writer's work, and the
emulator waited for the rest when it closed. So the writer holds a capture the manager marks
provisional (one whose coarse interval already has a snapshot) in memory, made whole and its
content copied, and stores it only when it must: when DEFER_MAX later captures have come or the
held content outgrows DEFER_BYTES, or when the file must hold everything (a flush, a restore's
base, a gc, the end). One deleted while held costs nothing more.

A capture carries only what changed since the previous one, so the nodes and content of held
captures stay in a pool for the captures after them: storing a capture takes from the pool what
its tree reaches beyond the last stored tree (`reached`). Each pool entry is owned by the last
capture that carried it. A capture X needs, besides the file, only entries owned by captures
after the last one stored before it (whatever an earlier one carried and X still has, that
stored capture has too, and so does the file); so an entry is dropped once no held capture
can need it (`_prune`), which also drops what held captures carried and later ones overwrote:
it never reaches the file."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterable, Optional

from cpu.pagetree import EMPTY, HASH, NodeSource, entries
from snapshots.snapshot import Snapshot

DEFER_MAX = 256  # captures after a held one before it is stored anyway (2.56 s at 10 ms)
DEFER_BYTES = 64 << 20  # held content and nodes before the oldest held captures are stored


@dataclass
class _Held:
    number: int  # its place among the snapshots submitted (counted from 1)
    snap: Snapshot
    floor: int  # pool entries owned by captures from this number on may be its


class HeldCaptures:
    """The held captures, oldest first, and the pool of nodes and content they may need."""

    def __init__(self) -> None:
        self.captures: OrderedDict[str, _Held] = OrderedDict()
        self._nodes: dict[bytes, tuple[int, bytes]] = {}  # hash -> (owner, node)
        self._blobs: dict[bytes, tuple[int, bytes]] = {}  # hash -> (owner, content)
        self._owned: OrderedDict[int, list[tuple[dict, bytes]]] = OrderedDict()  # owner -> its entries
        # Pool entries a stored capture took to the file: a node there has all below it there,
        # so a later capture's walk stops at it.
        self._in_file: set[bytes] = set()
        self._bytes = 0
        self._last_stored = 0  # the latest number stored

    def __len__(self) -> int:
        return len(self.captures)

    def carry(self, number: int, nodes: dict[bytes, bytes], blobs: dict[bytes, bytes]) -> None:
        """Pool what a held capture carries (captures come in order: `number` is the newest)."""
        owned = self._owned.setdefault(number, [])
        for pool, items in ((self._nodes, nodes), (self._blobs, blobs)):
            for h, data in items.items():
                if h not in pool:
                    self._bytes += len(data)
                pool[h] = (number, data)  # an earlier owner's list keeps a stale mention
                owned.append((pool, h))

    def hold(self, number: int, snap: Snapshot) -> None:
        self.captures[snap.name] = _Held(number, snap, self._last_stored + 1)

    def release(self, name: str) -> bool:
        """Stop holding a capture (to store it, or because it was deleted); whether it was held."""
        if self.captures.pop(name, None) is None:
            return False
        self._prune()
        return True

    def over(self, newest: int) -> bool:
        """Whether the oldest held capture should be stored now, `newest` the latest number."""
        if not self.captures:
            return False
        oldest = next(iter(self.captures.values()))
        return self._bytes > DEFER_BYTES or newest - oldest.number >= DEFER_MAX

    def oldest(self) -> str:
        return next(iter(self.captures))

    def numbers(self) -> list[int]:
        return [h.number for h in self.captures.values()]

    def reached(self, root: bytes, base: Optional[bytes], given: dict[bytes, bytes],
                stored: NodeSource) -> tuple[dict[bytes, bytes], dict[bytes, bytes]]:
        """The pool's nodes and content that the tree `root` reaches, through the pool's nodes
        and the `given` ones (the capture's own), apart from what it shares with the stored tree
        `base` at the same place, middle nodes and leaves alike (`stored` gives the base's
        nodes): storing the held captures in a row, each differs from the one before in a few
        leaves of a few middle nodes. A node in neither is in the file with all below it (or
        the store's check reports it missing)."""
        nodes: dict[bytes, bytes] = {}
        blobs: dict[bytes, bytes] = {}
        pages: set[bytes] = set()  # the hashes the leaves reached name
        if not self._nodes and not self._blobs:
            return nodes, blobs

        def node(h: bytes) -> Optional[bytes]:
            if h in given:
                return given[h]
            entry = self._nodes.get(h)
            if entry is None or h in self._in_file:
                return None
            nodes[h] = entry[1]
            return entry[1]
        base_mids = entries(base) if base is not None and len(base) == len(root) else [EMPTY] * (len(root) // HASH)
        for mid, base_mid in zip(entries(root), base_mids):
            if mid == base_mid or (mid_bytes := node(mid)) is None:
                continue
            # A leaf the base's middle node names is stored with all below it: set operations,
            # not a Python comparison per leaf.
            leaves = set(entries(mid_bytes)).difference(entries(stored(base_mid)) if base_mid != EMPTY else ())
            leaves.discard(EMPTY)
            for leaf in leaves:
                if (leaf_bytes := node(leaf)) is not None:
                    pages.update(entries(leaf_bytes))
        for h in (pages & self._blobs.keys()) - self._in_file:
            blobs[h] = self._blobs[h][1]
        return nodes, blobs

    def sector_blobs(self, disk: dict[int, bytes]) -> dict[bytes, bytes]:
        """The pool's content of these sectors (a capture's disk map names all of them)."""
        if not self._blobs:
            return {}
        return {h: self._blobs[h][1] for h in set(disk.values()) if h in self._blobs and h not in self._in_file}

    def node(self, h: bytes) -> Optional[bytes]:
        entry = self._nodes.get(h)
        return entry[1] if entry is not None else None

    def roots(self) -> list[bytes]:
        return [h.snap.pages.root for h in self.captures.values()]

    def sectors(self) -> set[bytes]:
        """The content hashes the held captures' disk maps name."""
        return {h for held in self.captures.values() for h in held.snap.disk.values()}

    def stored(self, number: int, taken: Iterable[bytes]) -> None:
        """Capture `number` is in the file with all it reaches, pool entries `taken` among
        them: the held ones after it need nothing the captures before it carried."""
        self._in_file.update(h for h in taken if h in self._nodes or h in self._blobs)
        self._last_stored = max(self._last_stored, number)
        for held in self.captures.values():
            if held.number > number:
                held.floor = max(held.floor, number + 1)
        self._prune()

    def lost(self) -> None:
        """What stored captures took to the file may not be there (a failed commit, a gc)."""
        self._in_file.clear()

    def _prune(self) -> None:
        floor = min((h.floor for h in self.captures.values()), default=self._last_stored + 1)
        while self._owned and next(iter(self._owned)) < floor:
            owner, owned = self._owned.popitem(last=False)
            for pool, h in owned:
                entry = pool.get(h)
                if entry is not None and entry[0] == owner:  # not carried again since
                    self._bytes -= len(pool.pop(h)[1])
                    self._in_file.discard(h)
