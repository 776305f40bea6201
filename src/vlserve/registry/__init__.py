"""Model families as data: a pydantic schema, the built-in family files, user registrations, and resolution."""

from vlserve.registry.resolve import ResolvedSpec, canonical_engine, resolve
from vlserve.registry.schema import KNOWN_ENGINES, FamilySpec, ModelSpec
from vlserve.registry.store import Registry, parse_family

__all__ = [
    "KNOWN_ENGINES",
    "FamilySpec",
    "ModelSpec",
    "Registry",
    "ResolvedSpec",
    "canonical_engine",
    "parse_family",
    "resolve",
]
