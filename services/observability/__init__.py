"""Metrics (Prometheus), logs (text or JSON lines, a request id on each) and per-request timing."""
