"""The Python client of the search API: ``from mmsearch.client import SearchClient``."""

from mmsearch.client.search_client import SearchClient

__all__ = ["SearchClient"]
