"""gRPC preprocess service: raw queries -> the exact tensors a repository model expects."""
