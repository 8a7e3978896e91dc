"""Adapters that let RAG frameworks use a bitsearch collection as their store.

``bitsearch.integrations.langchain`` (extra ``bitsearch[langchain]``), ``.haystack`` (``bitsearch[haystack]``)
and ``.llama_index`` (``bitsearch[llama-index]``); each imports its framework only when it is itself imported,
so ``import bitsearch`` never does.
"""
