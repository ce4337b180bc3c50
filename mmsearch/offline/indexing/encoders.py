"""The build's encoders live in the shared library (the documents API encodes with the same class)."""

from mmsearch.encoders.document_encoder import Encoder

__all__ = ["Encoder"]
