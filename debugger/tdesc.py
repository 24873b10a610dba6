"""The target descriptions the GDB stub serves as target.xml: x86-64, and i386 for a GDB that
connects while the CPU is in 32-bit protected mode (so that it disassembles 32-bit code).

GDB cannot change a target's register layout within a connection, and QEMU's x86-64 stub keeps
the amd64 one in every mode; but GDB reads target.xml at each `target remote`, so the stub
gives each connection the description of the mode the CPU is in when GDB connects. The i386 one
names i386:x86-64 as compatible, so GDB accepts it with an ELF64 symbol file (a Multiboot kernel
built by a 64-bit gcc); its registers are views of the low halves of the machine's.

One table per description is both the XML (a register's regnum is its index) and the layout of
the `g`/`G` packets: GDB orders those by ascending regnum, each register at its XML bit size, so
generating both from the same tuple keeps them from drifting apart.

GDB's amd64 support finds registers by feature and name: org.gnu.gdb.i386.core must hold the 24
general/segment registers and the 16 x87 ones, org.gnu.gdb.i386.sse xmm0-15 and mxcsr, and
org.gnu.gdb.i386.segments fs_base/gs_base (the form without the Linux-only orig_rax). The control
registers go in a feature of our own, which GDB shows in the "system" group.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass


@dataclass(frozen=True)
class Reg:
    name: str
    bits: int
    type: str = "int"
    group: str | None = None
    source: str = ""  # the machine register this one is the low bits of (default: its name)

    @property
    def size(self) -> int:
        return self.bits // 8

    @property
    def machine_name(self) -> str:
        return self.source or self.name


def _regs(names: str, bits: int, typ: str = "int", group: str | None = None) -> tuple[Reg, ...]:
    return tuple(Reg(n, bits, typ, group) for n in names.split())


_CORE = (_regs("rax rbx rcx rdx rsi rdi", 64, "int64") + _regs("rbp rsp", 64, "data_ptr")
         + _regs(" ".join(f"r{i}" for i in range(8, 16)), 64, "int64") + _regs("rip", 64, "code_ptr")
         + _regs("eflags", 32, "x86_eflags") + _regs("cs ss ds es fs gs", 32, "int32")
         + _regs(" ".join(f"st{i}" for i in range(8)), 80, "i387_ext")
         + _regs("fctrl fstat ftag fiseg fioff foseg fooff fop", 32, "int", "float"))
_SSE = _regs(" ".join(f"xmm{i}" for i in range(16)), 128, "x86_vec128") + _regs("mxcsr", 32, "x86_mxcsr", "vector")
_SEGMENTS = _regs("fs_base gs_base", 64, "int")
_SYSTEM = (_regs("cr0", 64, "x86_cr0", "system") + _regs("cr2 cr3 cr4 cr8", 64, "int64", "system")
           + _regs("efer", 64, "x86_efer", "system"))

_CORE32 = (tuple(Reg(f"e{n}", 32, "int32" if n not in ("sp", "bp") else "data_ptr", source=f"r{n}")
                 for n in "ax cx dx bx sp bp si di".split())
           + (Reg("eip", 32, "code_ptr", source="rip"),) + _CORE[17:])
_SSE32 = _SSE[:8] + _SSE[16:]


@dataclass(frozen=True)
class Description:
    architecture: str
    compatible: tuple[str, ...]
    features: tuple[tuple[str, tuple[Reg, ...]], ...]

    @property
    def registers(self) -> tuple[Reg, ...]:
        return tuple(r for _, regs in self.features for r in regs)

    @property
    def g_packet_size(self) -> int:
        return sum(r.size for r in self.registers)

    def regnum(self, name: str) -> int:
        return [r.name for r in self.registers].index(name)

    def xml(self) -> str:
        """The whole description as one document (no xi:include, so one qXfer annex serves it)."""
        target = ET.Element("target", version="1.0")
        ET.SubElement(target, "architecture").text = self.architecture
        # Bare metal: without this a Linux-configured GDB would assume the GNU/Linux ABI.
        ET.SubElement(target, "osabi").text = "none"
        for name in self.compatible:
            ET.SubElement(target, "compatible").text = name
        regnum = 0
        for feature_name, regs in self.features:
            feature = ET.SubElement(target, "feature", name=feature_name)
            _add_types(feature, regs)
            for reg in regs:
                attrs = {"name": reg.name, "bitsize": str(reg.bits), "type": reg.type, "regnum": str(regnum)}
                if reg.group:
                    attrs["group"] = reg.group
                ET.SubElement(feature, "reg", attrs)
                regnum += 1
        ET.indent(target)
        body = ET.tostring(target, encoding="unicode")
        return f'<?xml version="1.0"?>\n<!DOCTYPE target SYSTEM "gdb-target.dtd">\n{body}\n'


AMD64 = Description("i386:x86-64", (), (
    ("org.gnu.gdb.i386.core", _CORE),
    ("org.gnu.gdb.i386.sse", _SSE),
    ("org.gnu.gdb.i386.segments", _SEGMENTS),
    ("org.urr.x86.system", _SYSTEM),
))
I386 = Description("i386", ("i386:x86-64",), (
    ("org.gnu.gdb.i386.core", _CORE32),
    ("org.gnu.gdb.i386.sse", _SSE32),
    ("org.urr.x86.system", _SYSTEM),
))
FEATURES = AMD64.features
REGISTERS: tuple[Reg, ...] = AMD64.registers
G_PACKET_SIZE = AMD64.g_packet_size


def for_mode(long_mode: bool) -> Description:
    return AMD64 if long_mode else I386


# Bit fields GDB prints by name, e.g. "eflags 0x246 [ IF ZF PF ]".
_FLAGS = {
    "x86_eflags": (4, {"CF": 0, "PF": 2, "AF": 4, "ZF": 6, "SF": 7, "TF": 8, "IF": 9, "DF": 10,
                       "OF": 11, "NT": 14, "RF": 16, "VM": 17, "AC": 18, "VIF": 19, "VIP": 20, "ID": 21}),
    "x86_mxcsr": (4, {"IE": 0, "DE": 1, "ZE": 2, "OE": 3, "UE": 4, "PE": 5, "DAZ": 6, "IM": 7,
                      "DM": 8, "ZM": 9, "OM": 10, "UM": 11, "PM": 12, "FZ": 15}),
    "x86_cr0": (8, {"PE": 0, "MP": 1, "EM": 2, "TS": 3, "ET": 4, "NE": 5, "WP": 16, "AM": 18,
                    "NW": 29, "CD": 30, "PG": 31}),
    "x86_efer": (8, {"SCE": 0, "LME": 8, "LMA": 10, "NXE": 11}),
}
# The views of an xmm register: (field name, element type, count).
_VEC128 = (("v8_bfloat16", "bfloat16", 8), ("v4_float", "ieee_single", 4), ("v2_double", "ieee_double", 2),
           ("v16_int8", "int8", 16), ("v8_int16", "int16", 8), ("v4_int32", "int32", 4),
           ("v2_int64", "int64", 2))


def _add_types(feature: ET.Element, regs: tuple[Reg, ...]) -> None:
    """Define, inside the feature, the composite types its registers use (GDB scopes types by feature)."""
    for type_id in dict.fromkeys(r.type for r in regs):
        if type_id in _FLAGS:
            size, fields = _FLAGS[type_id]
            flags = ET.SubElement(feature, "flags", id=type_id, size=str(size))
            for name, bit in fields.items():
                ET.SubElement(flags, "field", name=name, start=str(bit), end=str(bit))
        elif type_id == "x86_vec128":
            for name, element, count in _VEC128:
                ET.SubElement(feature, "vector", id=f"x86_{name}", type=element, count=str(count))
            union = ET.SubElement(feature, "union", id=type_id)
            for name, _, _ in _VEC128:
                ET.SubElement(union, "field", name=name, type=f"x86_{name}")
            ET.SubElement(union, "field", name="uint128", type="uint128")


def target_xml() -> str:
    return AMD64.xml()
