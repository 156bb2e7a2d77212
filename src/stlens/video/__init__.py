"""stlens.video."""
