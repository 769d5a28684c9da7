"""Baton vs bare Celery benchmark: ``python -m bench`` (see docs/benchmarks.md)."""
