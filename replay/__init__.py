"""The record/replay seam: every non-deterministic input passes through here exactly once."""
