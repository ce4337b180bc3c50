"""build_index internals: read/validate documents, encode, write to Milvus + MongoDB, manage builds."""
