"""Adapters that let RAG frameworks use a bitsearch collection as their vector store.

``bitsearch.integrations.langchain`` (extra ``bitsearch[langchain]``) and
``bitsearch.integrations.llama_index`` (extra ``bitsearch[llama-index]``); each imports its framework
only when it is itself imported, so ``import bitsearch`` never does.
"""
