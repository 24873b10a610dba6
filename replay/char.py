"""Character-device input: bytes typed or piped into the serial port.

Host bytes arrive on a reader thread at host-determined times; the executor takes them only
between slices, through `poll()`, which logs them at that icount. Replay hands the logged bytes
over at the same icounts and never reads the host."""
from __future__ import annotations

import os
import queue
import threading
from typing import TYPE_CHECKING, Optional

from replay import log as L

if TYPE_CHECKING:
    from replay.seam import SeamCore  # which imports this module


class HostInput:
    """Reads a host file descriptor (stdin, a file, a pipe) on a daemon thread."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.queue: "queue.Queue[Optional[bytes]]" = queue.Queue()
        self.eof = False
        self.held = b""
        self.thread = threading.Thread(target=self._pump, name="urr-serial-input", daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        while True:
            try:
                data = os.read(self.fd, 4096)
            except OSError:
                data = b""
            self.queue.put(data or None)
            if not data:
                return

    def unget(self, data: bytes) -> None:
        """Give bytes back to be the first of the next take()."""
        self.held = data + self.held

    def take(self, timeout: Optional[float] = None) -> bytes:
        """Whatever has arrived (waiting up to `timeout` seconds for something, if given)."""
        out = bytearray(self.held)
        self.held = b""
        if out:
            timeout = None
        try:
            item = self.queue.get(timeout=timeout) if timeout is not None else self.queue.get_nowait()
            while True:
                if item is None:
                    self.eof = True
                    break
                out += item
                item = self.queue.get_nowait()
        except queue.Empty:
            pass
        return bytes(out)


class CharInputs:
    def __init__(self, core: SeamCore) -> None:
        self.core = core
        self.host: Optional[HostInput] = None

    def attach(self, host: HostInput) -> None:
        self.host = host

    @property
    def live(self) -> bool:
        """Whether more host input may still come (a halted guest may wait for it)."""
        host = self.host
        return not self.core.replaying and host is not None and (not host.eof or bool(host.held))

    def poll(self, limit: int) -> bytes:
        """Up to `limit` host bytes (what the device can take now), logged at the current icount.

        The rest waits on the host side, as a chardev holds bytes a full UART FIFO cannot take."""
        if self.host is None or self.core.replaying or limit <= 0:
            return b""
        data = self.host.take()
        if len(data) > limit:
            self.host.unget(data[limit:])
            data = data[:limit]
        if data:
            self.core.log(L.CHAR, data)
        return data

    def logged(self) -> bytes:
        """Replay: the bytes the recording received at the current icount."""
        return self.core.take(L.CHAR).fields[0]
