"""`python -m celery_mcp` is the `celery-mcp` command."""

from celery_mcp.cli import main

raise SystemExit(main())
