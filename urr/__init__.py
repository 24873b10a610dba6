"""urr: deterministic record/replay with reverse debugging for bare-metal x86-64 guests."""
