"""API keys: created, listed, revoked, re-tiered; stored hashed; checked on every request."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Sequence

from chalicelib.domain import scopes
from chalicelib.domain.errors import Forbidden, NotFound, Unauthorized, ValidationFailed
from chalicelib.services import catalog
from chalicelib.services.deps import Deps
from chalicelib.services.ports import ApiKey

KEY_PREFIX = "cr_"


def hash_key(plain: str) -> str:
    """The stored form of a key (SHA-256: keys are long random tokens, so no salt or slow hash is needed)."""
    return hashlib.sha256(plain.encode()).hexdigest()


def create_key(deps: Deps, owner: str, tier: str, scopes: Sequence[str] = ()) -> tuple[str, ApiKey]:
    """Make a key for `owner` in `tier`, restricted to `scopes` (none: everything); the plain key is returned
    once and never stored."""
    if tier not in deps.settings.tiers:
        raise ValidationFailed(f"unknown tier '{tier}'", {"tiers": sorted(deps.settings.tiers)})
    if not owner.strip():
        raise ValidationFailed("owner must not be empty")
    plain = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(
        key_hash=hash_key(plain),
        key_id="key_" + secrets.token_hex(6),
        owner=owner,
        tier=tier,
        created_at=deps.clock.now(),
        scopes=checked_scopes(scopes),
    )
    deps.keys.put(key)
    return plain, key


def revoke_key(deps: Deps, key_id: str) -> ApiKey:
    key = deps.keys.update(key_id, revoked=True)
    if key is None:
        raise NotFound(f"no key '{key_id}'")
    return key


def set_tier(deps: Deps, key_id: str, tier: str) -> ApiKey:
    if tier not in deps.settings.tiers:
        raise ValidationFailed(f"unknown tier '{tier}'", {"tiers": sorted(deps.settings.tiers)})
    key = deps.keys.update(key_id, tier=tier)
    if key is None:
        raise NotFound(f"no key '{key_id}'")
    return key


def set_scopes(deps: Deps, key_id: str, given: Sequence[str]) -> ApiKey:
    """Restrict (or, with `*` or nothing, free) an existing key; it applies from the key's next submit."""
    key = deps.keys.update(key_id, scopes=checked_scopes(given))
    if key is None:
        raise NotFound(f"no key '{key_id}'")
    return key


def checked_scopes(given: Sequence[str]) -> tuple[str, ...]:
    """Scopes as stored; ValidationFailed for a malformed scope or one naming no registered runtime or tool."""
    try:
        parsed = scopes.parse(list(given))
    except ValueError as exc:
        raise ValidationFailed(str(exc)) from exc
    out = []
    for scope in parsed:
        kind, _, name = scope.partition(":")
        if kind == "runtime":
            if catalog.runtime(name) is None:
                raise ValidationFailed(f"no runtime '{name}' for scope '{scope}'; see GET /v1/runtimes")
            scope = f"runtime:{catalog.canonical(name)}"  # runtime:python is runtime:python3
        elif kind == "tool" and catalog.tool(name) is None:
            raise ValidationFailed(f"no tool '{name}' for scope '{scope}'; see GET /v1/runtimes")
        out.append(scope)
    return scopes.parse(out)


def check_scope(key: ApiKey, runtime: str | None, tool: str | None) -> None:
    """403 naming the scope a job needs when the key may not run its runtime (canonical name) or tool."""
    kind: scopes.Kind = "runtime" if runtime is not None else "tool"
    name = runtime or tool or ""
    if scopes.allows(key.scopes, kind, name):
        return
    needed = scopes.needed(kind, name)
    raise Forbidden(
        f"this key may not run {kind} '{name}': that needs scope '{needed[0]}' or '{needed[1]}'; "
        f"the key's scopes are {', '.join(key.scopes)}",
        {"needed": list(needed), "scopes": list(key.scopes)},
    )


MAX_KEY_CHARS = 256
# RFC 7235's token68: every key the platform issues is `cr_` + URL-safe base64, well inside it.
_KEY_CHARS = re.compile(r"[A-Za-z0-9._~+/=-]+")


def bearer(authorization: str | None, x_api_key: str | None = None) -> str:
    """The plain key from `X-API-Key` or `Authorization: Bearer <key>`; Unauthorized naming the header if absent.
    A value that cannot be a key (too long, or a character no key has) is refused here, before it is hashed or
    looked up, and no message repeats it."""
    if x_api_key is not None and x_api_key.strip():
        return _plain(x_api_key.strip(), "X-API-Key")
    if authorization is not None and authorization.strip():
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("the Authorization header must be 'Bearer <key>'", {"header": "Authorization"})
        return _plain(token.strip(), "Authorization")
    raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'", {"header": "Authorization"})


def _plain(value: str, header: str) -> str:
    if len(value) > MAX_KEY_CHARS or not _KEY_CHARS.fullmatch(value):
        raise Unauthorized("the API key is not valid", {"header": header})
    return value


def authenticate(deps: Deps, plain: str) -> ApiKey:
    """The key's record, or Unauthorized for an unknown or revoked key (one consistent read)."""
    key = deps.keys.get(hash_key(plain))
    if key is None or key.revoked:
        raise Unauthorized("the API key is not valid")
    return key
