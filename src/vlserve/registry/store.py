"""Family files: the built-ins shipped in this package and the user's own, persisted under VLSERVE_HOME."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from pydantic import ValidationError

from vlserve import settings
from vlserve.errors import NotFound, RegistrationError
from vlserve.registry.schema import FamilySpec

log = logging.getLogger(__name__)


def parse_family(text: str | bytes | dict) -> FamilySpec:
    """Validate a family document (JSON text or an already parsed dict)."""
    try:
        data = json.loads(text) if isinstance(text, str | bytes) else text
        return FamilySpec.model_validate(data)
    except json.JSONDecodeError as exc:
        raise RegistrationError(f"family file is not valid JSON: {exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in exc.errors())
        raise RegistrationError(f"family file is invalid: {problems}") from exc


def builtin_families() -> dict[str, FamilySpec]:
    folder = resources.files("vlserve.registry") / "families"
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".json")), key=lambda f: f.name)
    families = (parse_family(f.read_text(encoding="utf-8")) for f in files)
    return {f.model_name: f for f in families}


@dataclass(frozen=True)
class Registry:
    """All families a server can launch: built-ins first, then user registrations from `folder`."""

    folder: Path

    @classmethod
    def default(cls) -> Registry:
        return cls(settings.registrations_dir())

    def builtins(self) -> dict[str, FamilySpec]:
        return _BUILTINS

    def user_families(self) -> dict[str, FamilySpec]:
        """The stored registrations; one this version cannot read is left out (and logged), not fatal."""
        if not self.folder.is_dir():
            return {}
        families = {}
        for path in sorted(self.folder.glob("*.json")):
            try:
                family = parse_family(path.read_text(encoding="utf-8"))
            except (OSError, RegistrationError) as exc:
                log.warning("skipping the stored registration %s: %s", path, getattr(exc, "message", exc))
                continue
            families[family.model_name] = family
        return families

    def families(self) -> dict[str, FamilySpec]:
        return {**self.builtins(), **self.user_families()}

    def get(self, name: str) -> FamilySpec:
        family = self.families().get(name)
        if family is None:
            raise NotFound(f"model {name!r} is not registered")
        return family

    def is_builtin(self, name: str) -> bool:
        return name in self.builtins()

    def register(self, family: FamilySpec, *, overwrite: bool = False) -> FamilySpec:
        if self.is_builtin(family.model_name):
            raise RegistrationError(
                f"{family.model_name} is a built-in model and cannot be replaced; register it under another model_name"
            )
        path = self._path(family.model_name)
        if path.exists() and not overwrite:
            raise RegistrationError(
                f"{family.model_name} is already registered; unregister it first or register with overwrite"
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(family.model_dump_json(indent=2), encoding="utf-8")
        tmp.replace(path)  # atomic: a crash never leaves half a registration behind
        return family

    def unregister(self, name: str) -> None:
        if self.is_builtin(name):
            raise RegistrationError(f"{name} is a built-in model and cannot be unregistered")
        path = self._path(name)
        if not path.exists():
            raise NotFound(f"model {name!r} is not a user registration")
        path.unlink()

    def _path(self, name: str) -> Path:
        return self.folder / f"{name}.json"


_BUILTINS = builtin_families()
