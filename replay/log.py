"""The event log file: a versioned header, then lz4-compressed, checksummed chunks of records.

Layout (all integers little-endian; see docs/replay.md for the full specification):

    header  := MAGIC(8) version:u16 flags:u16 json_len:u32 json crc32:u32
    chunk   := b"CK" raw_len:u32 comp_len:u32 base_icount:u64 end_icount:u64 count:u32 crc32:u32 payload
    payload := lz4.block(records), records := record*
    record  := kind:u8 delta_icount:varint fields...

Every record's icount is delta-coded from the previous record of its chunk (the first from the
chunk's base_icount), so a chunk decodes on its own and a reader can start at any chunk. A
chunk's end_icount promises that every record before that icount is in it or an earlier chunk:
a log cut short (a killed recording) replays up to the last complete chunk's end_icount."""
from __future__ import annotations

import json
import os
import stat
import struct
import zlib
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import lz4.block

MAGIC = b"URR-LOG\x00"
VERSION = 1
_HEADER = struct.Struct("<8sHHI")
_CHUNK = struct.Struct("<2sIIQQII")
CHUNK_HEADER_SIZE = _CHUNK.size
MAX_CHUNK_RAW = 1 << 24

# Record kinds and their field layouts: "v" varint, "z" zigzag varint, "b" length-prefixed bytes.
IRQ, WAKE, CLOCK, CHAR, BLOCK, RANDOM, DIGEST, END, MEMWRITE, REGWRITE = range(1, 11)
FIELDS: dict[int, str] = {
    IRQ: "v",  # vector
    WAKE: "v",  # icount the halted CPU woke at, minus the icount of the HLT
    CLOCK: "vv",  # source, value
    CHAR: "b",  # input bytes
    BLOCK: "vvb",  # lba, sector count, data
    RANDOM: "v",  # value
    DIGEST: "bbbb",  # general registers (varints), other-register hash, RAM hash, changed pages
    END: "zb",  # exit status (-1 for none), reason text
    MEMWRITE: "vb",  # a debugger's write to memory: address, bytes
    REGWRITE: "bv",  # a debugger's write to a register: its name, value
}
NAMES = {IRQ: "irq", WAKE: "wake", CLOCK: "clock", CHAR: "char", BLOCK: "block",
         RANDOM: "random", DIGEST: "digest", END: "end", MEMWRITE: "memory write",
         REGWRITE: "register write"}
ASYNC = frozenset((IRQ, WAKE, CHAR, END, MEMWRITE, REGWRITE))  # acted on by the executor between slices


class LogError(ValueError):
    """The file is not a usable event log; the message says why in one line."""


@dataclass(frozen=True)
class Record:
    kind: int
    icount: int
    fields: tuple[Any, ...]


@dataclass(frozen=True)
class Position:
    """Where a reader is: the byte offset of a chunk and the index of a record in it."""

    chunk: int
    index: int


def _put_varint(out: bytearray, n: int) -> None:
    if n < 0:
        raise ValueError("varint must be non-negative")
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _get_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise LogError("record runs past the end of its chunk")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 630:
            raise LogError("varint too long")


def encode_record(out: bytearray, rec: Record, prev_icount: int) -> None:
    """Append one record to a chunk being built."""
    if rec.icount < prev_icount:
        raise ValueError(f"record at icount {rec.icount} goes back before {prev_icount}")
    layout = FIELDS[rec.kind]
    if len(layout) != len(rec.fields):
        raise ValueError(f"{NAMES[rec.kind]} record needs {len(layout)} fields")
    out.append(rec.kind)
    _put_varint(out, rec.icount - prev_icount)
    for kind, value in zip(layout, rec.fields):
        if kind == "v":
            _put_varint(out, value)
        elif kind == "z":
            _put_varint(out, (value << 1) ^ (value >> 63) if value < 0 else value << 1)
        else:
            _put_varint(out, len(value))
            out += value


def decode_records(buf: bytes, base_icount: int) -> list[Record]:
    """Every record of one chunk's raw payload."""
    records = []
    pos, icount = 0, base_icount
    while pos < len(buf):
        kind = buf[pos]
        layout = FIELDS.get(kind)
        if layout is None:
            raise LogError(f"unknown record kind {kind}")
        delta, pos = _get_varint(buf, pos + 1)
        icount += delta
        fields: list[Any] = []
        for f in layout:
            value, pos = _get_varint(buf, pos)
            if f == "z":
                value = (value >> 1) ^ -(value & 1)
            elif f == "b":
                if pos + value > len(buf):
                    raise LogError("record runs past the end of its chunk")
                value, pos = bytes(buf[pos:pos + value]), pos + value
            fields.append(value)
        records.append(Record(kind, icount, tuple(fields)))
    return records


def encode_header(config: dict[str, Any]) -> bytes:
    body = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    head = _HEADER.pack(MAGIC, VERSION, 0, len(body)) + body
    return head + struct.pack("<I", zlib.crc32(head))


class LogWriter:
    """Appends records, flushing complete chunks to the file with one write each."""

    def __init__(self, path: str, config: dict[str, Any], start_icount: int = 0) -> None:
        """`start_icount`: where the run being logged starts (a branch starts mid-run)."""
        try:
            self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise LogError(f"cannot write rrfile {path}: {e.strerror}") from None
        self.path = path
        header = encode_header(config)
        os.write(self.fd, header)
        self.offset = len(header)
        self.buf = bytearray()
        self.count = 0
        self.base_icount = start_icount
        self.prev_icount = start_icount
        self.bytes_written = len(header)

    def append(self, kind: int, icount: int, *fields: Any) -> None:
        encode_record(self.buf, Record(kind, icount, fields), self.prev_icount)
        self.prev_icount = icount
        self.count += 1

    def position(self) -> Position:
        """Where a reader would find the next record appended (for snapshots)."""
        return Position(self.offset, self.count)

    def flush(self, end_icount: int) -> None:
        """Write the pending records as one chunk promising completeness up to `end_icount`."""
        if end_icount < self.prev_icount:
            raise ValueError("chunk end before its last record")
        raw = bytes(self.buf)
        comp = lz4.block.compress(raw, store_size=False) if raw else b""
        head = _CHUNK.pack(b"CK", len(raw), len(comp), self.base_icount, end_icount, self.count, 0)
        crc = zlib.crc32(comp, zlib.crc32(head[:-4]))
        chunk = head[:-4] + struct.pack("<I", crc) + comp
        os.write(self.fd, chunk)
        self.offset += len(chunk)
        self.bytes_written += len(chunk)
        self.buf.clear()
        self.count = 0
        self.base_icount = self.prev_icount = end_icount

    def close(self, end_icount: int) -> None:
        self.flush(end_icount)
        os.fsync(self.fd)
        os.close(self.fd)


@dataclass
class Chunk:
    offset: int
    next_offset: int
    base_icount: int
    end_icount: int
    records: list[Record]


class LogReader:
    """Reads a log written by LogWriter, validating everything before it is believed."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            with open(path, "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # /dev/zero would never end
                    raise LogError(f"rrfile {path} is not a regular file")
                self.data = f.read()
        except OSError as e:
            raise LogError(f"cannot read rrfile {path}: {e.strerror}") from None
        self.config, self.first_chunk = self._parse_header()

    @classmethod
    def from_bytes(cls, path: str, data: bytes) -> "LogReader":
        """A reader over a log already in memory (a span of one shipped to another machine);
        `path` names it in messages."""
        reader = cls.__new__(cls)
        reader.path, reader.data = path, data
        reader.config, reader.first_chunk = reader._parse_header()
        return reader

    def _parse_header(self) -> tuple[dict[str, Any], int]:
        d = self.data
        if len(d) < _HEADER.size + 4 or d[:8] != MAGIC:
            raise LogError(f"{self.path} is not an urr event log")
        _, version, _, n = _HEADER.unpack_from(d)
        if version != VERSION:
            raise LogError(f"{self.path} is event log format version {version}; this urr reads version {VERSION}")
        end = _HEADER.size + n
        if end + 4 > len(d) or struct.unpack_from("<I", d, end)[0] != zlib.crc32(d[:end]):
            raise LogError(f"{self.path}: log header is corrupt")
        try:
            config = json.loads(d[_HEADER.size:end])
        except ValueError:
            raise LogError(f"{self.path}: log header is corrupt") from None
        if not isinstance(config, dict):
            raise LogError(f"{self.path}: log header is corrupt")
        return config, end + 4

    def chunk_at(self, offset: int) -> Optional[Chunk]:
        """The complete, valid chunk at `offset`, or None at the end of the usable log.

        A short or torn chunk at the very end is the normal trace of a killed recording; a
        checksum mismatch anywhere is corruption and raises."""
        d = self.data
        if offset + _CHUNK.size > len(d):
            self._check_torn(offset)
            return None
        tag, raw_len, comp_len, base, end, count, crc = _CHUNK.unpack_from(d, offset)
        if tag != b"CK":
            raise LogError(f"{self.path}: corrupt chunk header at byte {offset}")
        stop = offset + _CHUNK.size + comp_len
        if stop > len(d):
            self._check_torn(offset)
            return None
        comp = d[offset + _CHUNK.size:stop]
        if zlib.crc32(comp, zlib.crc32(d[offset:offset + _CHUNK.size - 4])) != crc:
            raise LogError(f"{self.path}: checksum mismatch in chunk at byte {offset}")
        if raw_len > MAX_CHUNK_RAW or end < base:
            raise LogError(f"{self.path}: corrupt chunk at byte {offset}")
        try:
            raw = lz4.block.decompress(comp, uncompressed_size=raw_len) if raw_len else b""
        except lz4.block.LZ4BlockError:
            raise LogError(f"{self.path}: chunk at byte {offset} does not decompress") from None
        records = decode_records(raw, base)
        if len(records) != count or (records and records[-1].icount > end):
            raise LogError(f"{self.path}: chunk at byte {offset} does not match its header")
        return Chunk(offset, stop, base, end, records)

    def _check_torn(self, offset: int) -> None:
        """The chunk at `offset` runs past the end of the file: a killed recording's last write,
        unless a complete chunk follows it (one write is one chunk, so a torn write cannot hold
        one), which makes it a damaged chunk in the middle of the log."""
        d = self.data
        at = d.find(b"CK", offset + 1)
        while at >= 0:
            if at + _CHUNK.size <= len(d):
                _, _, comp_len, _, _, _, crc = _CHUNK.unpack_from(d, at)
                stop = at + _CHUNK.size + comp_len
                if stop <= len(d) and zlib.crc32(d[at + _CHUNK.size:stop],
                                                 zlib.crc32(d[at:at + _CHUNK.size - 4])) == crc:
                    raise LogError(f"{self.path}: the chunk at byte {offset} is damaged "
                                   f"(complete chunks follow it from byte {at})")
            at = d.find(b"CK", at + 1)

    def chunks(self, offset: Optional[int] = None) -> Iterator[Chunk]:
        off = self.first_chunk if offset is None else offset
        while True:
            c = self.chunk_at(off)
            if c is None:
                return
            yield c
            off = c.next_offset

    def truncated_tail(self, offset: int) -> bool:
        """Whether bytes follow the last complete chunk (a recording cut off mid-write)."""
        return offset < len(self.data)
