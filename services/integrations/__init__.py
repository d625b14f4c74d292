"""Retrievers for RAG frameworks (optional extras: `pip install 'saekin[langchain]'` / `'saekin[llamaindex]'`)."""
