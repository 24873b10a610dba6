"""Debugging a recording: the Timeline, the GDB remote stub and the built-in console."""
