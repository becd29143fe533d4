"""What `celery-mcp worker` (and the facade's in-process worker) add to a Celery worker."""
