"""Adapters for RAG frameworks; each imports its framework lazily."""
