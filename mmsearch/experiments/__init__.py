"""A/B experiments: the scenes/layers/arms config (spec) and its safe, round-trip edits (edit)."""
