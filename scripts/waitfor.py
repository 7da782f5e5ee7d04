"""Block until REDIS_URL answers (used by `make run` so Celery starts after its broker)."""

from __future__ import annotations

import os
import sys
import time

from redis import Redis
from redis.exceptions import RedisError


def main(timeout: float = 30.0) -> int:
    client = Redis.from_url(os.environ["REDIS_URL"], socket_connect_timeout=1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            client.ping()
            return 0
        except RedisError:
            time.sleep(0.2)
    print(f"redis at {os.environ['REDIS_URL']} did not answer in {timeout:.0f}s", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
