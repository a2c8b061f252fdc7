"""Block store backends."""
