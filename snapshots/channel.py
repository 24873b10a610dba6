"""How requests and content travel from the emulator to the catalog writer's process.

Requests go down a pipe as length-prefixed pickles (`Inbox` reads them). The content of captured
pages goes through a ring of shared memory instead (`Ring`): copying 45 KB into a pipe took
~75 us on these machines, into shared memory a few. A big capture's content comes down a pipe
of its own from a forked copy of the emulator, in pieces of records of hash, raw size and packed
size followed by the bytes as the catalog stores them (`write_fed`, `read_fed`): the copy packs
them, so the pipe carries ~4 MiB of bigmem's first 256 MiB and the writer packs nothing."""
from __future__ import annotations

import mmap
import os
import pickle
import select
import struct
import time
from itertools import accumulate
from typing import Any, BinaryIO, Iterable, Iterator, Optional

from snapshots.snapshot import check_content, pack_content

# ("capture", (Capture fields, ring end or None: fed, whether its nodes follow the content in the
# ring)) | ("content", blobs) | ("save", (snapshot, blobs)) | ("base", name)
# | ("delete", names) | ("gc", (hashes to keep, when due only)) | ("flush", None) | ("close", None)
Request = tuple[str, Any]
PIPE_BYTES = 1 << 20  # asked of the kernel for a pipe (the request pipe: about 20 snapshots)
LENGTH = 8  # bytes of a request's length prefix
RECORD = struct.Struct("<16sII")  # a fed content's hash, raw and packed sizes
PIECE = struct.Struct("<II")  # a fed piece: its records, and the packed bytes after them
FED_PIECE = 1 << 20  # packed bytes per fed piece (~17,000 of bigmem's pages): stored at a time
MAX_PIECE = 64 << 20  # bytes the writer reads for one piece at most: a feeder writes ~1-2 MiB


class Ring:
    """A circular buffer of content in memory shared with the child, made before the fork.

    The parent puts a capture's content at `head` in one piece (kept contiguous: a piece that
    would wrap starts over at the beginning); the request names each blob by hash and size and
    says where the piece ends. The child copies it out and publishes how far it has consumed in
    the header, which the parent never overtakes. The header
    also counts the snapshots the child has settled, so the parent can tell, without asking,
    whether one it wants to load is in the file yet."""

    HEADER = 4096

    def __init__(self, size: int) -> None:
        self.size = size
        self.mm = mmap.mmap(-1, self.HEADER + size, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE)
        self.view = memoryview(self.mm)
        # Aligned 8-byte words, each written by one side only and atomically: [0] bytes consumed,
        # [1] snapshots settled (both by the child).
        self.words = self.view[:16].cast("Q")
        self.head = 0  # bytes put in all (the parent's count)

    def put(self, items: list[bytes | memoryview], total: int) -> Optional[int]:
        """Copy `items` (`total` bytes) in, one after another: the position of the first, or
        None while the child has not made room."""
        pos = self.head
        if pos % self.size + total > self.size:
            pos += self.size - pos % self.size
        if pos + total - self.words[0] > self.size:
            return None
        at, view = self.HEADER + pos % self.size, self.view
        for data in items:
            end = at + len(data)
            view[at:end] = data
            at = end
        self.head = pos + total
        return pos

    def room(self) -> int:
        """Bytes the parent can put in now without waiting for the child."""
        return self.size - (self.head - self.words[0])

    def get(self, pos: int, sizes: Iterable[int]) -> Iterator[bytes]:
        """The items put at `pos`, given their sizes."""
        at = self.HEADER + pos % self.size
        for n in sizes:
            yield bytes(self.view[at:at + n])
            at += n

    def release(self, upto: int) -> None:
        """The child is done with everything before position `upto`."""
        self.words[0] = upto

    def close(self) -> None:
        self.words.release()
        self.view.release()
        self.mm.close()


class Inbox:
    """The child's end of the request pipe: whole requests out of a byte stream."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = bytearray()
        self.pos = 0

    def _next(self) -> Optional[Request]:
        if len(self.buf) - self.pos < LENGTH:
            return None
        size = int.from_bytes(self.buf[self.pos:self.pos + LENGTH], "little")
        start = self.pos + LENGTH
        if len(self.buf) - start < size:
            return None
        self.pos = start + size
        request = pickle.loads(self.buf[start:self.pos])
        if self.pos > PIPE_BYTES:
            del self.buf[:self.pos]
            self.pos = 0
        return request

    def get(self, timeout: Optional[float]) -> Optional[Request]:
        """The next request, or None if none came within `timeout` seconds (None: wait).
        EOFError once the parent has gone."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (request := self._next()) is None:
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not select.select([self.fd], [], [], remaining)[0]:
                    return None
            data = os.read(self.fd, PIPE_BYTES)
            if not data:
                raise EOFError
            self.buf += data
        return request


def write_fed(pipe: BinaryIO, blobs: Iterable[tuple[bytes, bytes | memoryview]]) -> None:
    """A feeder's side: check content against its hash, pack it, and write it down `pipe` in
    pieces: a PIECE, the RECORDs of its contents, then their packed bytes one after another."""
    records: list[bytes] = []
    packed: list[bytes] = []
    size = 0
    for h, data in blobs:
        check_content(h, data)
        p = pack_content(data)
        records.append(RECORD.pack(h, len(data), len(p)))
        packed.append(p)
        size += len(p)
        if size >= FED_PIECE:
            _write_piece(pipe, records, packed, size)
            records, packed, size = [], [], 0
    if records:
        _write_piece(pipe, records, packed, size)


def _write_piece(pipe: BinaryIO, records: list[bytes], packed: list[bytes], size: int) -> None:
    pipe.write(PIECE.pack(len(records), size))
    pipe.write(b"".join(records))
    pipe.write(b"".join(packed))


def read_fed(fd: int) -> Iterator[list[tuple[bytes, int, bytes]]]:
    """The writer's side: the pieces `write_fed` wrote down the pipe `fd`, each as rows of
    (hash, raw size, packed bytes), until the end of the pipe. Each piece is parsed whole, its
    records at C speed (record by record in Python, the parsing cost the writer ~1 us a page:
    0.24 s of bigmem1g's first pass). A feeder that died early leaves the rest missing (a cut
    piece is dropped), which the capture's store then reports."""
    with open(fd, "rb", buffering=PIPE_BYTES) as pipe:
        while len(head := pipe.read(PIECE.size)) == PIECE.size:
            count, size = PIECE.unpack(head)
            at = count * RECORD.size
            if at + size > MAX_PIECE:
                return
            body = pipe.read(at + size)
            if len(body) < at + size:
                return
            with memoryview(body) as view:
                records = list(RECORD.iter_unpack(view[:at]))
            starts = list(accumulate((n for _, _, n in records), initial=at))
            if starts[-1] != at + size:
                return
            yield [(h, raw, body[start:start + n]) for (h, raw, n), start in zip(records, starts)]
