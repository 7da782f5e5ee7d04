"""Traffic policies: which version serves a request that names neither version nor alias.

A policy is weights over aliases or versions (``champion 90, challenger 10``) and, if set,
a shadow: a version that scores the same rows, its outputs stored for comparison and
never returned. With a ``routing_key`` the choice is a hash of model and key, so the same
key lands on the same route in every API process and after restarts (as long as the
policy is unchanged); without one it is random by weight.

Stored as JSON on the model::

    {"routes": [{"alias": "champion", "weight": 90}, {"version": 7, "weight": 10}],
     "shadow": {"alias": "challenger"} | null}
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any

from app.errors import InvalidInput


@dataclass(frozen=True)
class Route:
    alias: str | None = None
    version: int | None = None
    weight: float = 100.0

    def as_dict(self) -> dict[str, Any]:
        target: dict[str, Any] = (
            {"alias": self.alias} if self.alias is not None else {"version": self.version}
        )
        return target | {"weight": self.weight}


@dataclass(frozen=True)
class Policy:
    routes: tuple[Route, ...]
    shadow: Route | None = None

    def as_dict(self) -> dict[str, Any]:
        shadow = None
        if self.shadow is not None:
            shadow = {k: v for k, v in self.shadow.as_dict().items() if k != "weight"}
        return {"routes": [r.as_dict() for r in self.routes], "shadow": shadow}


DEFAULT_POLICY = Policy((Route(alias="champion"),))


def parse(spec: dict[str, Any] | None) -> Policy:
    """A policy from its JSON form; raises InvalidInput naming what is wrong."""
    if not spec:
        return DEFAULT_POLICY
    routes = tuple(_route(r, f"routes[{i}]") for i, r in enumerate(spec.get("routes") or []))
    if not routes:
        raise InvalidInput("a traffic policy needs at least one route")
    shadow = _route({**spec["shadow"], "weight": 1}, "shadow") if spec.get("shadow") else None
    return Policy(routes, shadow)


def _route(spec: dict[str, Any], where: str) -> Route:
    alias, version, weight = spec.get("alias"), spec.get("version"), spec.get("weight", 100)
    if (alias is None) == (version is None):
        raise InvalidInput(f"{where}: give exactly one of alias or version", field=where)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight <= 1_000_000:
        raise InvalidInput(f"{where}: weight must be a positive number", field=where)
    if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 1):
        raise InvalidInput(f"{where}: version must be a positive integer", field=where)
    return Route(alias=alias, version=version, weight=float(weight))


def choose(policy: Policy, model: str, routing_key: str | None) -> Route:
    """The route for one request: sticky by ``routing_key``, else random by weight."""
    if len(policy.routes) == 1:
        return policy.routes[0]
    total = sum(r.weight for r in policy.routes)
    if routing_key is None:
        point = random.random() * total
    else:
        digest = hashlib.sha256(f"{model}\0{routing_key}".encode()).digest()
        point = int.from_bytes(digest[:8], "big") / 2**64 * total
    for route in policy.routes:
        point -= route.weight
        if point < 0:
            return route
    return policy.routes[-1]


def parse_cli(pairs: tuple[str, ...], shadow: str | None) -> Policy:
    """``champion=90 v7=10`` (an alias, or ``v`` and a version number) and an optional shadow."""
    routes = []
    for pair in pairs:
        target, _, weight = pair.partition("=")
        try:
            routes.append({**_target(target), "weight": float(weight)})
        except ValueError:
            raise InvalidInput(f"{pair!r} is not TARGET=WEIGHT, e.g. champion=90 or v7=10") from None
    return parse({"routes": routes, "shadow": _target(shadow) if shadow else None})


def _target(text: str) -> dict[str, Any]:
    if text[:1] == "v" and text[1:].isdigit():
        return {"version": int(text[1:])}
    return {"alias": text}
