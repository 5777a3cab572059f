"""API keys: created, listed, revoked, re-tiered; stored hashed; checked on every request."""

from __future__ import annotations

import hashlib
import secrets

from chalicelib.domain.errors import NotFound, Unauthorized, ValidationFailed
from chalicelib.services.deps import Deps
from chalicelib.services.ports import ApiKey

KEY_PREFIX = "cr_"


def hash_key(plain: str) -> str:
    """The stored form of a key (SHA-256: keys are long random tokens, so no salt or slow hash is needed)."""
    return hashlib.sha256(plain.encode()).hexdigest()


def create_key(deps: Deps, owner: str, tier: str) -> tuple[str, ApiKey]:
    """Make a key for `owner` in `tier`; the plain key is returned once and never stored."""
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


def authenticate(deps: Deps, plain: str) -> ApiKey:
    """The key's record, or Unauthorized for an unknown or revoked key (one consistent read)."""
    key = deps.keys.get(hash_key(plain))
    if key is None or key.revoked:
        raise Unauthorized("the API key is not valid")
    return key
