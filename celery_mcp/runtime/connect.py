"""Open the Cluster of some settings, with the embedded Valkey wherever one is needed.

Every front end and process opens its cluster here: the embedded server is the broker when
none is configured, and the state store (task history, schedules, workflow records, rpc://
results) when neither the broker nor the result backend is Redis/Valkey (RabbitMQ with rpc://,
say). It lives apart from `embedded`, which the CLI imports at start: this module loads Celery.
"""

from __future__ import annotations

from celery_mcp.app import make_app
from celery_mcp.config import Settings
from celery_mcp.runtime.embedded import ensure_running, resolve
from celery_mcp.service.cluster import Cluster


def open_cluster(settings: Settings, *, worker: bool = False) -> Cluster:
    """The Cluster of `settings` (`worker`: the app reconnects forever, as a daemon's should)."""
    settings = resolve(settings)
    app = make_app(settings, worker=worker)
    cluster = Cluster(settings, app)
    if cluster.state_url is None:
        server = ensure_running(settings.data_dir)
        cluster = Cluster(settings.model_copy(update={"state_url": server.url_for_db(0)}), app)
    return cluster
