"""Checkpoint formats: pure key/tensor maps between owl2 and other layouts, and their I/O."""
