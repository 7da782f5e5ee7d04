"""The long-lived objects a request or a task needs, built once from Settings."""

from __future__ import annotations

from dataclasses import dataclass

from celery import Celery
from redis import Redis
from sqlalchemy.engine import Engine

from app.config import Settings
from app.db import make_engine
from app.registry import Registry


@dataclass
class Services:
    settings: Settings
    engine: Engine
    redis: Redis
    registry: Registry
    celery: Celery


def build_services(settings: Settings, celery: Celery) -> Services:
    engine = make_engine(settings.database_url, settings.db_pool_size)
    # No socket timeout: long-polls block in BLPOP for up to max_wait_seconds.
    redis = Redis.from_url(settings.redis_url, health_check_interval=30)
    registry = Registry(engine, settings.artifact_root, settings.registry_cache_seconds)
    return Services(settings, engine, redis, registry, celery)
