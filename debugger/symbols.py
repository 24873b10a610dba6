"""A guest ELF's symbols: names to addresses (`kmain`, `balance+8`) and addresses to names, for
the console and the whole-history queries alike."""
from __future__ import annotations

from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

_NAMED_TYPES = ("STT_FUNC", "STT_OBJECT")  # preferred over linker symbols when naming an address


def symbol_table(path: str) -> list[tuple[str, int, str]]:
    """(name, address, type) of the guest ELF's function, object and untyped symbols."""
    out: list[tuple[str, int, str]] = []
    try:
        with open(path, "rb") as f:
            for sec in ELFFile(f).iter_sections():
                if isinstance(sec, SymbolTableSection):
                    out += [(sym.name, sym["st_value"], sym["st_info"]["type"]) for sym in sec.iter_symbols()
                            if sym.name and sym["st_info"]["type"] in (*_NAMED_TYPES, "STT_NOTYPE")]
    except (OSError, ValueError):
        pass
    return out


def load_symbols(path: str) -> dict[str, int]:
    """Function and object symbols of the guest ELF (empty if it has none)."""
    out: dict[str, int] = {}
    for name, addr, _ in symbol_table(path):
        out.setdefault(name, addr)
    return out


def parse_number(text: str, what: str, minimum: int = 0) -> int:
    """`text` as an integer (0x.. too) of at least `minimum`, or ValueError naming `what`."""
    try:
        value = int(text, 0)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise ValueError(f"bad {what} '{text}'")
    return value


class Symbols:
    """Both directions of one ELF's symbol table (empty without an ELF)."""

    def __init__(self, path: str | None) -> None:
        table = symbol_table(path) if path else []
        self.names: dict[str, int] = {}
        for name, addr, _ in table:
            self.names.setdefault(name, addr)
        # address -> name, functions and objects winning over linker symbols at the same address
        self.by_addr = {a: n for n, a, t in sorted(table, key=lambda e: e[2] in _NAMED_TYPES)}

    def address(self, text: str) -> int:
        """A number or SYMBOL[+OFFSET] as an address; ValueError if it is neither."""
        text = text.strip().lstrip("*")
        base, plus, off = text.partition("+")
        if base in self.names:
            return self.names[base] + (parse_number(off, "offset") if plus else 0)
        try:
            return int(text, 0)
        except ValueError:
            raise ValueError(f"unknown address or symbol '{text}'") from None

    def where(self, addr: int) -> str:
        """`0x100100 <report_corruption+0>`, or the bare number when no symbol precedes it."""
        best = max((a for a in self.by_addr if a <= addr), default=None)
        return f"{addr:#x} <{self.by_addr[best]}+{addr - best}>" if best is not None else f"{addr:#x}"
