"""The scope registry: core's scopes plus those each context registers at start-up."""

from __future__ import annotations

from collections.abc import Iterable

CORE_SCOPES: dict[str, str] = {
    "admin": "Everything, including managing API keys",
    "leads:read": "Read leads",
    "leads:write": "Create and change leads",
    "leads:admin": "Erase leads (GDPR) and resolve possible duplicates",
    "jobs:admin": "Inspect, retry and cancel background jobs",
}

_registry: dict[str, str] = dict(CORE_SCOPES)


def register_scopes(scopes: dict[str, str]) -> None:
    """Let a bounded context add its own scopes (`name: description`)."""
    _registry.update(scopes)


def known_scopes() -> dict[str, str]:
    """Every scope a key may be given, with its description."""
    return dict(_registry)


def unknown_scopes(scopes: Iterable[str]) -> list[str]:
    """The scopes in `scopes` that nobody registered."""
    return sorted(s for s in scopes if s not in _registry)


def grants(held: frozenset[str], needed: str) -> bool:
    """True if a key holding `held` may use a route that needs `needed` (`admin` holds all)."""
    return needed in held or "admin" in held
