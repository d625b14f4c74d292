"""API keys: stored hashed, each with a scope (read, write, admin) and the collections it may see;
who a request's key is (the principal) and what it may do; per-key request and upload limits."""
