"""The commands that run predq's processes, used by both `make run` and docker-compose.

Where each listens and where it keeps state come from the environment (BIND,
FLOWER_ADDRESS/FLOWER_PORT, VAR_DIR), not from flags, so the commands stay identical
everywhere; tests/test_deployment.py checks the compose file against this list.
"""

from __future__ import annotations


def worker_command(queues: str, *options: str) -> list[str]:
    """A Celery worker's command taking ``queues`` (options: its name, pool, concurrency)."""
    return ["celery", "-A", "workers.main", "--quiet", "worker", "-Q", queues, *options, "--loglevel=INFO"]


PROCESSES: dict[str, list[str]] = {  # fmt: skip
    "migrate": ["flask", "--app", "app", "db", "upgrade"],
    "api": ["python", "-m", "app.serve"],
    # Online batches, sweeps and training; batch-job chunks have workers of their own.
    "worker": worker_command("inference,maintenance,training"),
    # Bulk scoring (batch jobs) and explained rows, at a lower CPU priority
    # (BULK_WORKER_NICE) than the rest: the slow work, kept off the online path.
    "bulk-worker": worker_command("bulk,explain", "-n", "bulk@%h"),
    # Webhook deliveries (app/webhooks/, workers/webhook_sender.py): waiting on receivers'
    # answers, so threads, and a worker of their own so no batch ever waits behind a receiver.
    "webhook-sender": worker_command("webhooks", "-n", "webhooks@%h", "-P", "threads", "-c", "4"),
    "beat": ["celery", "-A", "workers.main", "--quiet", "beat", "--loglevel=INFO"],
    "flower": ["celery", "-A", "workers.main", "flower"],
}
