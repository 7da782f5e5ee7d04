"""Worker pools: a model may be served by workers of its own. Its online rows wake Celery queue
``inference.<pool>`` instead of ``inference``, and a worker started with ``-Q inference.<pool>``
takes only those. Explained rows and batch-job chunks keep their queues (``explain``, ``bulk``).

Pools are known from the ``POOLS`` setting (comma-separated names); ``default`` is always one and
means no pool of its own (stored as NULL). Which pools have a worker is told by the workers
themselves (app/registry/held.py, :func:`~app.registry.held.report_pools`).
"""

from __future__ import annotations

from sqlalchemy import or_, select, update
from sqlalchemy.engine import Engine

from app.celery_app import INFERENCE_QUEUE
from app.db import Model
from app.errors import InvalidInput, ModelNotFound
from app.registry.versions import NAME, existing_name

DEFAULT_POOL = "default"


def known(setting: str) -> list[str]:
    """Every pool a model may be put in: ``default`` and those the POOLS setting lists."""
    return [DEFAULT_POOL] + [
        p for p in (name.strip() for name in setting.split(",")) if p and p != DEFAULT_POOL
    ]


def queue_of(pool: str | None) -> str:
    """The Celery queue that takes a pool's online batches (the default pool's: ``inference``)."""
    return INFERENCE_QUEUE if pool in (None, DEFAULT_POOL) else f"{INFERENCE_QUEUE}.{pool}"


def pool_of_queue(queue: str) -> str | None:
    """The pool a Celery queue serves (None: not an online inference queue)."""
    if queue == INFERENCE_QUEUE:
        return DEFAULT_POOL
    prefix = f"{INFERENCE_QUEUE}."
    return queue[len(prefix) :] if queue.startswith(prefix) and queue != prefix else None


def check(pool: str, setting: str) -> None:
    """Refuse (422) a pool the POOLS setting does not list, naming those it does."""
    pools = known(setting)
    if pool not in pools or not NAME.fullmatch(pool):
        raise InvalidInput(
            f"unknown pool {pool!r}: the POOLS setting lists {', '.join(pools)}", field="pool", pools=pools
        )


def set_pool(engine: Engine, name: str, pool: str) -> None:
    """Put model NAME in ``pool`` (``default``: no pool of its own)."""
    existing_name(name)
    with engine.begin() as conn:
        done = conn.execute(
            update(Model).where(Model.name == name).values(pool=None if pool == DEFAULT_POOL else pool)
        )
    if done.rowcount == 0:
        raise ModelNotFound(f"no model named {name!r}", model=name)


def pool_of(engine: Engine, name: str) -> str:
    """Model NAME's pool (``default`` when it has none, or there is no such model)."""
    with engine.connect() as conn:
        return conn.scalar(select(Model.pool).where(Model.name == name)) or DEFAULT_POOL


def models_in(engine: Engine, pools: list[str]) -> set[str]:
    """The names of the models in any of ``pools``."""
    stored = [p for p in pools if p != DEFAULT_POOL]
    where = (
        or_(Model.pool.in_(stored), Model.pool.is_(None)) if DEFAULT_POOL in pools else Model.pool.in_(stored)
    )
    with engine.connect() as conn:
        return set(conn.scalars(select(Model.name).where(where)))


def pools_in_use(engine: Engine) -> set[str]:
    """Every pool some model is in, besides the default."""
    with engine.connect() as conn:
        return {str(p) for (p,) in conn.execute(select(Model.pool).where(Model.pool.is_not(None)).distinct())}
