"""Files, Redis-backed stores and other blocking storage (callers use trio.to_thread)."""
