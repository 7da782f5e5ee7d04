"""The long-lived objects a request or a task needs, built once from Settings."""

from __future__ import annotations

from dataclasses import dataclass

from celery import Celery
from flask import current_app
from redis import Redis
from sqlalchemy.engine import Engine

from app.access.auth import ApiKeys
from app.access.ratelimit import RateLimits
from app.config import Settings
from app.db import make_engine
from app.registry.deadlines import DeadlineDefaults
from app.registry.registry import Registry
from app.scoring import compiled
from app.storage import ObjectStore, artifact_store, batch_store
from app.webhooks.outbox import EndpointCache, announce_alias_moves


@dataclass
class Services:
    settings: Settings
    engine: Engine
    redis: Redis
    redis_wait: Redis
    cache: Redis
    """The output cache's and finished views' Redis: ``redis`` itself unless CACHE_REDIS_URL names another."""
    registry: Registry
    keys: ApiKeys
    celery: Celery
    limits: RateLimits
    """Per-key rate limits and the failed-key guard, counted in Redis (app/access/ratelimit.py)."""
    deadlines: DeadlineDefaults
    """Models' default deadlines for their jobs (app/registry/deadlines.py)."""
    batches: ObjectStore
    """BATCH_ROOT: batch jobs' inputs, parts and results (app/storage/)."""
    webhook_endpoints: EndpointCache
    """Webhook endpoints, re-read every AUTH_CACHE_SECONDS: workers announce jobs' ends to them."""


def current_services() -> Services:
    """The services of the app handling this request or command."""
    return current_app.extensions["predq"]


def build_services(settings: Settings, celery: Celery) -> Services:
    engine = make_engine(settings.database_url, settings.db_pool_size)
    # redis-py's default socket timeout (5 s) suits every command but the long-poll,
    # which blocks up to max_wait_seconds: that one gets a client of its own.
    redis = Redis.from_url(settings.redis_url, health_check_interval=30)
    redis_wait = Redis.from_url(
        settings.redis_url, health_check_interval=30, socket_timeout=settings.max_wait_seconds + 5
    )
    registry = Registry(
        engine,
        artifact_store(settings),
        settings.registry_cache_seconds,
        allow_pickle=settings.allow_pickle,
        skops_trusted_types=[t.strip() for t in settings.skops_trusted_types.split(",") if t.strip()],
        reference_rows=settings.drift_reference_rows,
        # INFERENCE_BACKEND=sklearn: no compiled version is loaded, so none serves compiled.
        compiled_loader=compiled.load if settings.inference_backend == "auto" else None,
        cache_bytes=settings.model_cache_bytes,
        cache_max=settings.model_cache_max,
    )
    keys = ApiKeys(engine, settings.auth_cache_seconds)
    limits = RateLimits(settings.redis_url)
    deadlines = DeadlineDefaults(engine, settings.registry_cache_seconds)
    # Its own Redis (maxmemory, allkeys-lru) only when named: the cache may be evicted, the
    # queue may not (README, Redis keys). Short timeouts: a cache that stalls is skipped.
    cache = redis
    if settings.cache_redis_url and settings.cache_redis_url != settings.redis_url:
        cache = Redis.from_url(
            settings.cache_redis_url, health_check_interval=30, socket_timeout=2, socket_connect_timeout=2
        )
    announce_alias_moves()
    return Services(
        settings,
        engine,
        redis,
        redis_wait,
        cache,
        registry,
        keys,
        celery,
        limits,
        deadlines,
        batch_store(settings),
        EndpointCache(engine, settings.auth_cache_seconds),
    )
