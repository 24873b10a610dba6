"""Whole-recording work above the snapshots: the segment runner (a recording replayed in
parallel, cut at its snapshots), verify, and the whole-history queries (`Recording`)."""
from __future__ import annotations

__all__ = ["Recording"]


def __getattr__(name: str):
    """`history.Recording`, imported when first asked for: `urr-snap`'s catalog commands import
    this package without loading the emulator."""
    if name == "Recording":
        from history.recording import Recording

        return Recording
    raise AttributeError(f"module 'history' has no attribute {name!r}")
