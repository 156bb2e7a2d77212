"""stlens.models."""
