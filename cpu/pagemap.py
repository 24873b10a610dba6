"""Which pages of a mapping the process has written since the last look: asked of the kernel.

Linux 6.7+ tracks it exactly with userfaultfd write protection in asynchronous mode
(UFFD_FEATURE_WP_ASYNC): the mapping is registered for write protection, and one PAGEMAP_SCAN
ioctl with PM_SCAN_WP_MATCHING returns the pages written since the previous scan (category
PAGE_IS_WRITTEN, same-value writes included) and write-protects them again, atomically. A store to
a protected page costs one minor fault that the kernel resolves itself (~1.2 us here); nothing
is delivered to the process. The scan walks page tables with the kernel's fast path for
PAGE_IS_WRITTEN alone, ~2 ns per 4 KiB page table entry and one step per huge page (a read-only
huge page stays whole), against ~30 ns per touched page for the anonymous-page scan of the
private-file-mapping scheme this replaced (measurements in docs/replay.md).

On a kernel without it (or where userfaultfd is refused), every present page counts as written:
a superset, correct but costing a hash of every touched page per look."""
from __future__ import annotations

import ctypes
import errno
import os

PAGE = 4096
PAGEMAP_SCAN = 0xC0606610  # _IOWR('f', 16, struct pm_scan_arg)
_PM_SCAN_WP_MATCHING, _PM_SCAN_CHECK_WPASYNC = 1 << 0, 1 << 1
_PAGE_IS_WRITTEN = 1 << 1  # include/uapi/linux/fs.h
_REGIONS = 256  # ranges returned per ioctl call; a longer answer takes more calls
# userfaultfd (include/uapi/linux/userfaultfd.h)
_SYS_USERFAULTFD = 323  # x86-64
_UFFD_USER_MODE_ONLY = 1
_UFFDIO_API, _UFFDIO_REGISTER = 0xC018AA3F, 0xC020AA00
_UFFD_API = 0xAA
_UFFD_FEATURE_WP_ASYNC = 1 << 15
_UFFDIO_REGISTER_MODE_WP = 1 << 1
# Top byte of a pagemap entry: bit 7 present, bit 6 swapped.
_PRESENT_TOP_BYTE = bytes(1 if b & 0xC0 else 0 for b in range(256))

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _Region(ctypes.Structure):
    _fields_ = [("start", ctypes.c_uint64), ("end", ctypes.c_uint64),
                ("categories", ctypes.c_uint64)]


class _ScanArg(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "size", "flags", "start", "end", "walk_end", "vec", "vec_len", "max_pages",
        "category_inverted", "category_mask", "category_anyof_mask", "return_mask")]


class _UffdApi(ctypes.Structure):
    _fields_ = [("api", ctypes.c_uint64), ("features", ctypes.c_uint64), ("ioctls", ctypes.c_uint64)]


class _UffdRegister(ctypes.Structure):
    _fields_ = [("start", ctypes.c_uint64), ("len", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("ioctls", ctypes.c_uint64)]


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def _write_protect_async(address: int, length: int) -> int:
    """A userfaultfd with the range registered for asynchronous write protection."""
    fd = _check(_libc.syscall(_SYS_USERFAULTFD, os.O_CLOEXEC | os.O_NONBLOCK | _UFFD_USER_MODE_ONLY),
                "userfaultfd")
    try:
        _check(_libc.ioctl(fd, _UFFDIO_API, ctypes.byref(_UffdApi(_UFFD_API, _UFFD_FEATURE_WP_ASYNC, 0))),
               "UFFDIO_API")
        _check(_libc.ioctl(fd, _UFFDIO_REGISTER, ctypes.byref(
            _UffdRegister(address, length, _UFFDIO_REGISTER_MODE_WP, 0))), "UFFDIO_REGISTER")
    except OSError:
        os.close(fd)
        raise
    return fd


class WrittenPages:
    """Tracks writes to the `pages` pages at host address `address` (an anonymous mapping).

    The first `scan()` reports every page that is present (the mapping's pages were never
    protected); each later one the pages written since the scan before."""

    def __init__(self, address: int, pages: int) -> None:
        if address % PAGE:
            raise ValueError(f"mapping at {address:#x} is not page-aligned")
        self.address, self.pages = address, pages
        self._fd = os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC)
        self._vec = (_Region * _REGIONS)()
        self._words = memoryview(self._vec).cast("B").cast("Q")  # (start, end, categories)...
        self._arg = _ScanArg(size=ctypes.sizeof(_ScanArg),
                             flags=_PM_SCAN_WP_MATCHING | _PM_SCAN_CHECK_WPASYNC,
                             end=address + pages * PAGE, vec=ctypes.addressof(self._vec),
                             vec_len=_REGIONS, category_mask=_PAGE_IS_WRITTEN,
                             return_mask=_PAGE_IS_WRITTEN)
        self._arg_ref = ctypes.byref(self._arg)
        self._uffd = self._exact_tracking()
        self.exact = self._uffd is not None
        self.scan = self._ioctl if self.exact else self._read

    def _exact_tracking(self) -> int | None:
        """The userfaultfd, or None where the kernel offers no asynchronous write protection."""
        try:
            uffd = _write_protect_async(self.address, self.pages * PAGE)
        except OSError as e:
            if e.errno in (errno.ENOSYS, errno.EINVAL, errno.EPERM, errno.EOPNOTSUPP, errno.ENOTTY):
                return None
            raise
        try:
            self._ioctl()
        except OSError as e:
            os.close(uffd)
            if e.errno in (errno.ENOTTY, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM):
                return None
            raise
        return uffd

    def _ioctl(self) -> list[int]:
        """Pages written since the last scan, ascending, write-protected again."""
        out: list[int] = []
        arg, base = self._arg, self.address
        arg.start = base
        while True:
            n = _check(_libc.ioctl(self._fd, PAGEMAP_SCAN, self._arg_ref), "PAGEMAP_SCAN")
            words = self._words[:3 * n].tolist()  # one list, not a ctypes object per field
            for k in range(0, 3 * n, 3):
                out.extend(range((words[k] - base) // PAGE, (words[k + 1] - base) // PAGE))
            if n < _REGIONS or self._arg.walk_end >= arg.end:
                return out
            arg.start = arg.walk_end

    def _read(self) -> list[int]:
        """Every present page, ascending, from the 8-byte-per-page pagemap (no tracking)."""
        raw = os.pread(self._fd, self.pages * 8, (self.address // PAGE) * 8)
        flags = raw[7::8].translate(_PRESENT_TOP_BYTE)
        out = []
        i = flags.find(1)
        while i >= 0:
            out.append(i)
            i = flags.find(1, i + 1)
        return out

    def close(self) -> None:
        os.close(self._fd)
        if self._uffd is not None:
            os.close(self._uffd)
