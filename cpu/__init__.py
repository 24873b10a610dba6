"""The emulated PC: Unicorn x86-64 CPU driven in icount slices, plus the board's devices."""
