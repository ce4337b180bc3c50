"""Ordering recalled candidates: rule-based fusion of sources and the learned ranker, shared by serving and training."""
