"""Benchmarks: celery_mcp's MCP tools against raw Celery, on one private cluster.

`python -m bench` runs them all and prints one table (`--quick`: tiny counts, the CI smoke in
tests/integration/test_bench_smoke.py). See bench/__main__.py.
"""
