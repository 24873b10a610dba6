"""Snapshots: capturing machine state, the SQLite catalog that stores it, and the thinning policy."""
