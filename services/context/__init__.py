"""Context for an LLM: search, then assemble cited passages within a token budget."""
