"""mmsearch shared library: config, errors, the model manifest, preprocessing and clients.

Services and offline tools import this package, never each other.
"""

__version__ = "0.1.0"
