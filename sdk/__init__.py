"""The guest SDK's sources (C, assembly, the linker script), shipped as package data so that
`urr-cc` finds them after any install."""
