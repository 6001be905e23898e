"""Retrieval: a Chroma store of Reddit travel threads embedded with sentence-transformers."""
