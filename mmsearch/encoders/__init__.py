"""Embedding encoders: one interface over a model run in-process (ONNX Runtime) or served by Triton."""
