"""`python -m celery_mcp` is the `celery-mcp` command."""

from celery_mcp.interfaces.cli import main

raise SystemExit(main())
