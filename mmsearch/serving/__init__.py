"""Serving tier: Triton Inference Server (as bundled by nvidia-pytriton) over the model repository."""
