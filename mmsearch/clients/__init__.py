"""Clients of the stack's dependencies; each wraps its library's errors into mmsearch.errors."""
