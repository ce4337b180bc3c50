"""The composition root: the only package that may import every layer (up, stack)."""
