"""A user's own app with every task name the seed's examples use, run by a stock `celery worker`.

Configured the way an ordinary app is: its own broker and backend (from the environment), no
`result_extended`, Celery's defaults otherwise. The tasks do what their names say, quickly.
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery

app = Celery(
    "seed",
    broker=os.environ.get("SEED_BROKER_URL"),
    backend=os.environ.get("SEED_RESULT_BACKEND"),
    set_as_current=False,
)
app.conf.update(broker_connection_retry_on_startup=True, worker_pool_restarts=True)


@app.task(name="myapp.tasks.send_email")
def send_email(to: str, subject: str, template: str = "plain") -> dict[str, Any]:
    return {"sent": True, "to": to, "subject": subject, "template": template}


@app.task(name="myapp.tasks.cleanup")
def cleanup(path: str = "/tmp") -> str:
    return f"cleaned {path}"


@app.task(name="myapp.tasks.reminder")
def reminder() -> str:
    return "reminded"


@app.task(name="myapp.tasks.notify")
def notify() -> str:
    return "notified"


@app.task(name="myapp.tasks.process")
def process(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "processed": True}


@app.task(name="myapp.tasks.api_call")
def api_call() -> str:
    return "called"


@app.task(name="tasks.email")
def email(to: str, subject: str) -> str:
    return f"sent {subject!r} to {to}"


@app.task(name="tasks.slow")
def slow(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task(name="tasks.extract")
def extract(url: str) -> list[str]:
    return [url, "row-1", "row-2"]


@app.task(name="tasks.transform")
def transform(rows: list[str]) -> list[str]:
    return [row.upper() for row in rows]


@app.task(name="tasks.load")
def load(rows: list[str]) -> int:
    return len(rows)


@app.task(name="tasks.process_image")
def process_image(path: str) -> str:
    return f"processed {path}"


@app.task(name="tasks.fetch_data")
def fetch_data(source: str) -> dict[str, str]:
    return {"source": source}


@app.task(name="tasks.aggregate")
def aggregate(results: list[dict[str, str]]) -> list[str]:
    return sorted(r["source"] for r in results)


@app.task(name="tasks.square")
def square(x: int) -> int:
    return x * x


@app.task(name="tasks.sum_results")
def sum_results(values: list[int]) -> int:
    return sum(values)


@app.task(name="tasks.check_health")
def check_health() -> str:
    return "healthy"


@app.task(name="tasks.cleanup")
def cleanup_dir(path: str) -> str:
    return f"cleaned {path}"


@app.task(name="tasks.daily_report")
def daily_report() -> str:
    return "report"


@app.task(name="tasks.weekly_summary")
def weekly_summary() -> str:
    return "summary"


@app.task(name="tasks.monthly_cleanup")
def monthly_cleanup() -> str:
    return "cleaned"


@app.task(name="tasks.poll_api")
def poll_api() -> str:
    return "polled"


@app.task(name="tasks.unreliable_api")
def unreliable_api() -> str:
    return "answered"


@app.task(name="tasks.step1")
def step1(value: str) -> str:
    return f"{value}>1"


@app.task(name="tasks.step2")
def step2(value: str) -> str:
    return f"{value}>2"


@app.task(name="tasks.step3")
def step3(value: str) -> str:
    return f"{value}>3"


@app.task(name="tasks.task1")
def task1() -> int:
    return 1


@app.task(name="tasks.task2")
def task2() -> int:
    return 2


@app.task(name="tasks.task3")
def task3() -> int:
    return 3


@app.task(name="tasks.t1")
def t1() -> str:
    return "t1"


@app.task(name="tasks.t2")
def t2() -> str:
    return "t2"


@app.task(name="tasks.callback")
def callback(results: list[str]) -> list[str]:
    return results
