"""Retrieval service: experiment split, QP, embed, recall, rerank, summary behind HTTP and gRPC."""
