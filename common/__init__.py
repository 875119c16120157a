"""Small helpers the other packages share (no dependency on any of them)."""
