"""Runtime probe (being built)."""
