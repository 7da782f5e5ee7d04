"""API keys: created and revoked by the CLI, stored hashed, checked on every /v1 request.

A token is ``pq_`` + 32 random bytes (URL-safe base64). Only its sha256 is stored: a
token that random cannot be guessed from its hash, so a slow password hash would buy
nothing and cost every request. The first characters (``prefix``) are kept to tell keys
apart in listings.

Scopes: ``predict`` (submit and poll, read the registry) and ``admin`` (everything,
including changing aliases). Every endpoint under ``/v1`` (and ``/v2/models/``) needs ``predict`` unless its
view is marked with :func:`requires_scope`; health checks, ``/metrics`` and the OpenAPI
document need no key.
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import Flask, current_app, g, request
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from app.db import PRIORITIES, ApiKey, utcnow
from app.errors import ApiKeyError, Forbidden, Unauthorized

log = logging.getLogger(__name__)

SCOPES = ("predict", "admin")
TOKEN_PREFIX = "pq_"
#: What needs a key: /v1, and the Open Inference Protocol's model routes (its health and
#: server metadata are public, as /healthz and /readyz are).
PROTECTED_PREFIXES = ("/v1/", "/v2/models/")

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id and name, what it may do, its own rate limit if any."""

    key_id: int
    name: str
    scopes: frozenset[str]
    rate_limit: str | None
    default_priority: str | None = None
    """Its submits' priority when they name none (None: normal)."""
    max_priority: str | None = None
    """The highest priority it may ask for (None: any): app/predictions/steering.py."""

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def may_read(reader: Principal | None, owner: int | None) -> bool:
    """Whether ``reader`` may see what ``owner`` submitted (a job, a batch job): with auth off
    (no reader) and for admin keys everything, for other keys only their own."""
    return reader is None or reader.key_id == owner or reader.allows("admin")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ApiKeys:
    """The api_keys table; each process holds every active key in memory (a dict lookup a request).

    A token whose hash is not among the active keys is refused at once, with no database
    query, so made-up tokens cost nothing but their share of the failed-key limit. The set
    is checked against the table at most every ``cache_seconds``: a cheap query of how many
    keys exist, the newest and how many are revoked (keys are only ever created and revoked),
    and the whole set is read again only when that changed. So a new key works, and a
    revoked one stops, within ``cache_seconds`` in every process; in this process at once.
    """

    def __init__(self, engine: Engine, cache_seconds: float = 5.0) -> None:
        self.engine = engine
        self.cache_seconds = cache_seconds
        self._active: dict[str, Principal] = {}
        self._version: tuple[Any, ...] | None = None
        self._checked_at = -math.inf
        self._refresh_lock = threading.Lock()

    def create(
        self,
        name: str,
        scopes: list[str],
        rate_limit: str | None = None,
        *,
        default_priority: str | None = None,
        max_priority: str | None = None,
    ) -> tuple[Principal, str]:
        """A new key; returns it with its token, which is not stored and cannot be shown again.

        ``default_priority``: its submits' priority when they name none; ``max_priority``: the
        highest it may ask for (a higher one is refused 403). None: normal, and any.
        """
        if not name or len(name) > 100 or not name.isprintable():
            raise ApiKeyError(f"a key name must be 1 to 100 printable characters, not {name!r}")
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown or not scopes:
            raise ApiKeyError(f"scopes must be among {', '.join(SCOPES)}; got {', '.join(scopes) or 'none'}")
        if rate_limit is not None:
            _check_rate_limit(rate_limit)
        for option, value in (("default priority", default_priority), ("priority ceiling", max_priority)):
            if value is not None and value not in PRIORITIES:
                raise ApiKeyError(f"a key's {option} is one of {', '.join(PRIORITIES)}, not {value!r}")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        granted = sorted(set(scopes))
        row = ApiKey(
            name=name,
            prefix=token[:10],
            key_hash=hash_token(token),
            scopes=granted,
            rate_limit=rate_limit,
            default_priority=default_priority,
            max_priority=max_priority,
        )
        try:
            with Session(self.engine) as session, session.begin():
                session.add(row)
                session.flush()
                key_id = row.id
        except IntegrityError:
            raise ApiKeyError(f"an API key named {name!r} already exists") from None
        self._checked_at = -math.inf  # this process sees its own change on the next request
        return Principal(key_id, name, frozenset(granted), rate_limit, default_priority, max_priority), token

    def revoke(self, name: str) -> None:
        with Session(self.engine) as session, session.begin():
            row = session.scalar(select(ApiKey).where(ApiKey.name == name))
            if row is None:
                raise ApiKeyError(f"no API key named {name!r}")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
        self._checked_at = -math.inf

    def list(self) -> list[ApiKey]:
        with Session(self.engine) as session:
            return list(session.scalars(select(ApiKey).order_by(ApiKey.name)))

    def authenticate(self, token: str) -> Principal | None:
        """The active key behind ``token``, or None (unknown or revoked): a dictionary lookup."""
        self._refresh_if_due()
        return self._active.get(hash_token(token))

    def by_id(self, key_id: int) -> Principal | None:
        """The active key with this id, or None (revoked or unknown), read from the table itself:
        the console's signed-in key, whose session ends at its first request after a revoke in
        any process (one primary-key read a page; the API's bearer checks use the set above)."""
        with Session(self.engine) as session:
            row = session.execute(_ACTIVE.where(ApiKey.id == key_id)).one_or_none()
        return None if row is None else _principal(row)

    def _refresh_if_due(self) -> None:
        if time.monotonic() - self._checked_at < self.cache_seconds:
            return
        # One thread checks; the others go on with the set they have (all wait for the first).
        if not self._refresh_lock.acquire(blocking=self._version is None):
            return
        try:
            if time.monotonic() - self._checked_at >= self.cache_seconds:
                self._refresh()
        finally:
            self._refresh_lock.release()

    def _refresh(self) -> None:
        try:
            with Session(self.engine) as session:
                version = tuple(session.execute(_VERSION).one())
                if version != self._version:
                    rows = session.execute(_ACTIVE).all()
                    self._active = {r.key_hash: _principal(r) for r in rows}
                    self._version = version
        except OperationalError:
            if self._version is None:
                raise  # no set to go on with: the request gets the database's 503
            log.warning(
                "API keys not re-read (database unreachable); keeping the %d known", len(self._active)
            )
        self._checked_at = time.monotonic()


# Keys are only created (a new id) and revoked (revoked_at set once): this changes with either.
_VERSION = select(func.count(), func.max(ApiKey.id), func.count(ApiKey.revoked_at))
_ACTIVE = select(
    ApiKey.id,
    ApiKey.name,
    ApiKey.key_hash,
    ApiKey.scopes,
    ApiKey.rate_limit,
    ApiKey.default_priority,
    ApiKey.max_priority,
).where(ApiKey.revoked_at.is_(None))


def _principal(row: Any) -> Principal:
    return Principal(
        row.id, row.name, frozenset(row.scopes), row.rate_limit, row.default_priority, row.max_priority
    )


def _check_rate_limit(value: str) -> None:
    from limits import parse_many

    try:
        parse_many(value)
    except ValueError:
        raise ApiKeyError(
            f"rate limit {value!r} is not like '100/second' or '10/second;500/minute'"
        ) from None


def requires_scope(scope: str) -> Callable[[F], F]:
    """Mark a view as needing ``scope`` (the default for /v1 is ``predict``)."""

    def mark(view: F) -> F:
        view.required_scope = scope  # type: ignore[attr-defined]  # a mark on the function, read by the hook
        return view

    return mark


def current_principal() -> Principal | None:
    """The caller of this request; None when auth is off or the path is public."""
    return g.get("principal")


def init_auth(
    app: Flask, keys: ApiKeys, enabled: bool, on_refused: Callable[[], None] = lambda: None
) -> None:
    """Check the bearer token of every /v1 request before anything else runs.

    ``on_refused`` is called for a token that is not an active key, before the 401: it
    counts the failure against the client address and may raise instead (the failed-key
    limit, app/access/ratelimit.py). A valid key never reaches it.
    """
    if not enabled:
        log.warning("AUTH IS OFF (AUTH_ENABLED=false): anyone who reaches this API can use every endpoint")
        return

    @app.before_request
    def _authenticate() -> None:
        if not request.path.startswith(PROTECTED_PREFIXES):
            return
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("send an API key as 'Authorization: Bearer <key>'")
        principal = keys.authenticate(token.strip())
        if principal is None:
            on_refused()
            raise Unauthorized("this API key is unknown or revoked")
        view = current_app.view_functions.get(request.endpoint or "")
        needed = getattr(view, "required_scope", "predict")
        if not principal.allows(needed):
            raise Forbidden(
                f"this API key lacks the {needed!r} scope",
                required_scope=needed,
                key_scopes=sorted(principal.scopes),
            )
        g.principal = principal
