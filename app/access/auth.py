"""API keys: created and revoked by the CLI, stored hashed, checked on every /v1 request.

A token is ``pq_`` + 32 random bytes (URL-safe base64). Only its sha256 is stored: a
token that random cannot be guessed from its hash, so a slow password hash would buy
nothing and cost every request. The first characters (``prefix``) are kept to tell keys
apart in listings.

Scopes: ``predict`` (submit and poll, read the registry) and ``admin`` (everything,
including changing aliases). Every endpoint under ``/v1`` needs ``predict`` unless its
view is marked with :func:`requires_scope`; health checks, ``/metrics`` and the OpenAPI
document need no key.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from cachetools import TTLCache
from flask import Flask, current_app, g, request
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db import ApiKey, utcnow
from app.errors import ApiKeyError, Forbidden, Unauthorized

log = logging.getLogger(__name__)

SCOPES = ("predict", "admin")
TOKEN_PREFIX = "pq_"
PROTECTED_PREFIX = "/v1/"

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id and name, what it may do, its own rate limit if any."""

    key_id: int
    name: str
    scopes: frozenset[str]
    rate_limit: str | None

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def may_read(reader: Principal | None, owner: int | None) -> bool:
    """Whether ``reader`` may see what ``owner`` submitted (a job, a batch job): with auth off
    (no reader) and for admin keys everything, for other keys only their own."""
    return reader is None or reader.key_id == owner or reader.allows("admin")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ApiKeys:
    """The api_keys table, with a short cache in front of lookups (one per request)."""

    def __init__(self, engine: Engine, cache_seconds: float = 5.0) -> None:
        self.engine = engine
        self._cache: TTLCache[str, Principal] = TTLCache(maxsize=10_000, ttl=cache_seconds)
        # Refused tokens too, so a client retrying with a bad key costs no query per
        # request; apart, so a flood of made-up tokens cannot push known keys out.
        self._refused: TTLCache[str, bool] = TTLCache(maxsize=10_000, ttl=cache_seconds)
        self._lock = threading.Lock()

    def create(self, name: str, scopes: list[str], rate_limit: str | None = None) -> tuple[Principal, str]:
        """A new key; returns it with its token, which is not stored and cannot be shown again."""
        if not name or len(name) > 100 or not name.isprintable():
            raise ApiKeyError(f"a key name must be 1 to 100 printable characters, not {name!r}")
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown or not scopes:
            raise ApiKeyError(f"scopes must be among {', '.join(SCOPES)}; got {', '.join(scopes) or 'none'}")
        if rate_limit is not None:
            _check_rate_limit(rate_limit)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        granted = sorted(set(scopes))
        row = ApiKey(
            name=name,
            prefix=token[:10],
            key_hash=hash_token(token),
            scopes=granted,
            rate_limit=rate_limit,
        )
        try:
            with Session(self.engine) as session, session.begin():
                session.add(row)
                session.flush()
                key_id = row.id
        except IntegrityError:
            raise ApiKeyError(f"an API key named {name!r} already exists") from None
        return Principal(key_id, name, frozenset(granted), rate_limit), token

    def revoke(self, name: str) -> None:
        with Session(self.engine) as session, session.begin():
            row = session.scalar(select(ApiKey).where(ApiKey.name == name))
            if row is None:
                raise ApiKeyError(f"no API key named {name!r}")
            if row.revoked_at is None:
                row.revoked_at = utcnow()

    def list(self) -> list[ApiKey]:
        with Session(self.engine) as session:
            return list(session.scalars(select(ApiKey).order_by(ApiKey.name)))

    def authenticate(
        self, token: str, guard: Callable[[], LookupGuard | None] | None = None
    ) -> Principal | None:
        """The key behind ``token``, or None when it is unknown or revoked.

        ``guard`` makes the guard of a lookup, only when a token not cached is looked up:
        it is told before (it may raise to refuse the lookup) and after a lookup that found
        no usable key. A cached token costs nothing more.
        """
        digest = hash_token(token)
        with self._lock:
            hit = self._cache.get(digest)
            refused = digest in self._refused
        if hit is not None or refused:
            return hit
        lookup_guard = guard() if guard is not None else None
        if lookup_guard is not None:
            lookup_guard.before_lookup()
        with Session(self.engine) as session:
            row = session.scalar(select(ApiKey).where(ApiKey.key_hash == digest))
        if row is None or row.revoked_at is not None:
            with self._lock:
                self._refused[digest] = True
            if lookup_guard is not None:
                lookup_guard.after_refusal()
            return None
        principal = Principal(row.id, row.name, frozenset(row.scopes), row.rate_limit)
        with self._lock:
            self._cache[digest] = principal
        return principal


class LookupGuard(Protocol):
    """What ApiKeys.authenticate tells before and after looking a token up (app/access/ratelimit.py)."""

    def before_lookup(self) -> None: ...

    def after_refusal(self) -> None: ...


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
    app: Flask, keys: ApiKeys, enabled: bool, guard: Callable[[], LookupGuard | None] = lambda: None
) -> None:
    """Check the bearer token of every /v1 request before anything else runs.

    ``guard`` makes the guard of this request's token lookup (see ApiKeys.authenticate).
    """
    if not enabled:
        log.warning("AUTH IS OFF (AUTH_ENABLED=false): anyone who reaches this API can use every endpoint")
        return

    @app.before_request
    def _authenticate() -> None:
        if not request.path.startswith(PROTECTED_PREFIX):
            return
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("send an API key as 'Authorization: Bearer <key>'")
        principal = keys.authenticate(token.strip(), guard)
        if principal is None:
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
