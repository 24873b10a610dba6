"""How requests and content travel from the emulator to the catalog writer's process.

Requests go down a pipe as length-prefixed pickles (`Inbox` reads them). The content of captured
pages goes through a ring of shared memory instead (`Ring`): copying 45 KB into a pipe took
~75 us on these machines, into shared memory a few. A big capture's content comes down a pipe
of its own from a forked copy of the emulator, as records of hash, raw size, packed size and
the bytes as the catalog stores them (`RECORD`, snapshots.writer's `_feed`): the copy packs
them, so the pipe carries ~4 MiB of bigmem's first 256 MiB and the writer packs nothing."""
from __future__ import annotations

import mmap
import os
import pickle
import select
import struct
import time
from typing import Any, Iterable, Iterator, Optional

# ("capture", (Capture fields, ring end or None: fed, whether its nodes follow the content in the
# ring)) | ("content", blobs) | ("save", (snapshot, blobs)) | ("base", name)
# | ("delete", names) | ("gc", (hashes to keep, when due only)) | ("flush", None) | ("close", None)
Request = tuple[str, Any]
PIPE_BYTES = 1 << 20  # asked of the kernel for a pipe (the request pipe: about 20 snapshots)
LENGTH = 8  # bytes of a request's length prefix
RECORD = struct.Struct("<16sII")  # a fed content's hash, raw and packed sizes, before its bytes


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
