"""stlens.pairs."""
