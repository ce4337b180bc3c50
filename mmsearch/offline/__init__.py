"""Offline tools: fine-tune, evaluate, grid search, export, build_index."""
