"""The Celery layer: plain sync functions over one `Cluster`; no MCP imports.

Each public function is an `Operation` (see `registry`; `funnel` runs it): the MCP server, the
facade and the CLI all call the same functions with the same pydantic models.
"""
