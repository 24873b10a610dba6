"""Multiboot 2 (GNU GRUB's specification): the kernel's header and the boot information.

The header is found as GRUB finds it: magic 0xE85250D6, 8-byte aligned, wholly in the first
32 KiB, with magic + architecture + header_length + checksum = 0 (mod 2^32), architecture 0
(i386 protected mode), then 8-byte aligned tags up to an end tag. A tag the loader cannot honour
is refused unless its optional flag is set, as the specification asks; an information request
for a type GRUB knows is accepted even where the machine has no such information (EFI, ACPI,
framebuffer, BIOS boot device), which is then absent, as GRUB does on a PC without it.

The boot information (its address in EBX, EAX = 0x36D76289) holds the command line, the boot
loader name, the modules, basic memory information, the memory map and, for a relocatable
header, the load base address."""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Optional

MAGIC = 0xE85250D6
BOOTLOADER_MAGIC = 0x36D76289
SEARCH = 32768
ALIGN = 8
ARCH_I386 = 0
OPTIONAL = 1

# header tags
(TAG_END, TAG_INFO_REQUEST, TAG_ADDRESS, TAG_ENTRY, TAG_CONSOLE, TAG_FRAMEBUFFER,
 TAG_MODULE_ALIGN, TAG_EFI_BS, TAG_ENTRY_EFI32, TAG_ENTRY_EFI64, TAG_RELOCATABLE) = range(11)
CONSOLE_REQUIRED = 1
# information tags
INFO_CMDLINE, INFO_LOADER_NAME, INFO_MODULE, INFO_BASIC_MEMINFO, INFO_MMAP = 1, 2, 3, 4, 6
INFO_LOAD_BASE = 21
INFO_KNOWN = range(0, 22)  # the types GRUB accepts in a request (END .. LOAD_BASE_ADDR)


class HeaderError(ValueError):
    """The header is malformed or asks for what urr cannot give (the message says which)."""


@dataclass(frozen=True)
class Header:
    offset: int  # in the file
    address: Optional[tuple[int, int, int, int]]  # header_addr, load_addr, load_end_addr, bss_end_addr
    entry: Optional[int]
    relocatable: Optional[tuple[int, int, int]]  # min_addr, max_addr, align


def find_header(raw: bytes) -> Optional[Header]:
    """The first Multiboot 2 header in the first 32 KiB, checked; None if there is none."""
    area = raw[:SEARCH]
    for offset in range(0, len(area) - 15, ALIGN):
        magic, arch, length, checksum = struct.unpack_from("<IIII", area, offset)
        if magic != MAGIC:
            continue
        if (magic + arch + length + checksum) & 0xFFFFFFFF:
            raise HeaderError(f"Multiboot 2 header at offset {offset:#x} has a bad checksum ({checksum:#010x})")
        if arch != ARCH_I386:
            raise HeaderError(f"Multiboot 2 header at offset {offset:#x} is for architecture {arch}, not i386 (0)")
        if length < 24 or offset + length > len(area):
            raise HeaderError(f"Multiboot 2 header at offset {offset:#x} has length {length}, which does "
                              "not fit in the first 32 KiB of the file with its end tag")
        return _parse_tags(area[offset:offset + length], offset)
    return None


def _parse_tags(header: bytes, offset: int) -> Header:
    address = entry = relocatable = None
    at = 16
    while True:
        if at + 8 > len(header):
            raise HeaderError(f"Multiboot 2 header at offset {offset:#x} has no end tag")
        kind, flags, size = struct.unpack_from("<HHI", header, at)
        if size < 8 or at + size > len(header):
            raise HeaderError(f"Multiboot 2 header tag {kind} at offset {offset + at:#x} has size {size}")
        body = header[at + 8:at + size]
        optional = bool(flags & OPTIONAL)
        if kind == TAG_END:
            break
        if kind == TAG_INFO_REQUEST:
            unknown = [t for (t,) in struct.iter_unpack("<I", body[:len(body) & ~3]) if t not in INFO_KNOWN]
            if unknown and not optional:
                raise HeaderError(f"Multiboot 2 header requests information of unsupported type {unknown[0]}")
        elif kind == TAG_ADDRESS:
            address = _fields(body, 4, kind, offset)
        elif kind == TAG_ENTRY:
            (entry,) = _fields(body, 1, kind, offset)
        elif kind == TAG_CONSOLE:
            (console_flags,) = _fields(body, 1, kind, offset)
            if console_flags & CONSOLE_REQUIRED and not optional:
                raise HeaderError("Multiboot 2 kernel requires a console (EGA text or framebuffer); "
                                  "urr has only serial ports")
        elif kind == TAG_FRAMEBUFFER and not optional:
            raise HeaderError("Multiboot 2 kernel requires a framebuffer, which urr does not have")
        elif kind == TAG_EFI_BS and not optional:
            raise HeaderError("Multiboot 2 kernel requires EFI boot services; urr boots it as a BIOS loader")
        elif kind == TAG_RELOCATABLE:
            relocatable = _fields(body, 3, kind, offset)
        elif kind not in (TAG_MODULE_ALIGN, TAG_ENTRY_EFI32, TAG_ENTRY_EFI64, TAG_FRAMEBUFFER,
                          TAG_EFI_BS) and not optional:
            raise HeaderError(f"Multiboot 2 header has tag {kind}, which urr does not support")
        # module alignment: modules are always page aligned; the EFI entry points apply only
        # to an EFI boot, which a BIOS loader ignores, as GRUB does
        at += -(-size // ALIGN) * ALIGN
    if address is not None and entry is None:
        raise HeaderError("Multiboot 2 header has an address tag but no entry address tag")
    return Header(offset, address, entry, relocatable)


def _fields(body: bytes, count: int, kind: int, offset: int) -> tuple[int, ...]:
    if len(body) < 4 * count:
        raise HeaderError(f"Multiboot 2 header tag {kind} (header at {offset:#x}) is truncated")
    return struct.unpack_from(f"<{count}I", body)


def check_relocatable(header: Header, load_start: int, load_end: int) -> None:
    """urr loads a relocatable kernel at its link address: that must be in the header's range."""
    if header.relocatable is None:
        return
    low, high, align = header.relocatable
    if load_start < low or load_end > high or (align and load_start % align):
        raise HeaderError(f"Multiboot 2 relocatable kernel linked at {load_start:#x}-{load_end:#x}, "
                          f"outside its range {low:#x}-{high:#x} (align {align:#x}); urr does not relocate")


def information(cmdline: bytes, ram_size: int, low_kib: int, memory_map: list[tuple[int, int, int]],
                modules: list[tuple[int, int, str]], load_base: Optional[int]) -> bytes:
    """The boot information: total size, reserved, then the tags, each 8-byte aligned."""
    tags = [_tag(INFO_CMDLINE, cmdline + b"\0"), _tag(INFO_LOADER_NAME, b"urr\0")]
    tags += [_tag(INFO_MODULE, struct.pack("<II", start, end) + text.encode() + b"\0")
             for start, end, text in modules]
    tags.append(_tag(INFO_BASIC_MEMINFO, struct.pack("<II", low_kib, (ram_size - (1 << 20)) // 1024)))
    entries = b"".join(struct.pack("<QQII", base, length, kind, 0) for base, length, kind in memory_map)
    tags.append(_tag(INFO_MMAP, struct.pack("<II", 24, 0) + entries))
    if load_base is not None:
        tags.append(_tag(INFO_LOAD_BASE, struct.pack("<I", load_base)))
    tags.append(_tag(TAG_END, b""))
    body = b"".join(tags)
    return struct.pack("<II", 8 + len(body), 0) + body


def _tag(kind: int, content: bytes) -> bytes:
    tag = struct.pack("<II", kind, 8 + len(content)) + content
    return tag + bytes(-len(tag) % ALIGN)
