"""The families' contract, read from the source: family code never reaches into engines, serving or the API;
callers reach a family only through `get_family` (the one dynamic import of a family package); no caller names a
family package. And every family present answers the face."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import vlserve
from vlserve.families import Family, family_names, get_family
from vlserve.registry import Registry

SRC = Path(vlserve.__file__).parent
FAMILIES = SRC / "families"


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_family_code_imports_no_engine_service_or_api():
    for path in FAMILIES.rglob("*.py"):
        bad = {m for m in imported_modules(path) if m.split(".")[:2] in (["vlserve", "engines"], ["vlserve", "serving"],
                                                                            ["vlserve", "api"])}  # fmt: skip
        assert not bad, f"{path.relative_to(SRC)} imports {sorted(bad)}"


def test_one_dynamic_import_of_family_packages_and_no_caller_names_a_family():
    dynamic, named = [], []
    for path in SRC.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if "import_module(" in text and "families" in text:
            dynamic.append(path.relative_to(SRC).as_posix())
        if not path.is_relative_to(FAMILIES) and any(name in text for name in family_names()):
            named.append(path.relative_to(SRC).as_posix())
    assert dynamic == ["families/__init__.py"]
    assert named == []


def test_registry_family_names_are_the_packages_present():
    assert "internvl2_5" in family_names()
    for family in Registry.default().builtins().values():
        assert family.model_family in family_names()


@pytest.mark.parametrize("name", family_names())
def test_every_family_answers_the_face(name):
    family: Family = get_family(name)
    assert family.name == name and family.default_max_tiles >= 1 and family.vllm_config_types
    assert family.num_tiles(448, 448) == 1
    assert family.num_tiles(4000, 1000) <= family.default_max_tiles + 1  # + the thumbnail
    assert family.num_tiles(4000, 1000, max_tiles=1) == 1
    adapter = family.transformers()
    assert all(callable(getattr(adapter, verb)) for verb in ("load_model", "empty_model", "load_tokenizer", "encode",
                                                              "stop_token_ids"))  # fmt: skip
    vllm = family.vllm()  # imports transformers, not vLLM
    assert vllm.DEFAULT_IMAGE_LIMIT >= 1 and all(
        callable(getattr(vllm, verb))
        for verb in ("register_vllm_model", "model_view", "load_tokenizer", "stop_token_ids", "encode"))


def test_an_unknown_family_is_refused_with_the_known_ones():
    with pytest.raises(LookupError, match="internvl2_5"):
        get_family("nope")


def test_no_two_families_register_the_same_vllm_config_type():
    """A config `model_type` maps to one config class in transformers' AutoConfig (e.g. every InternVL checkpoint
    says `internvl_chat`): two implementations may not both claim one."""
    claimed = [t for name in family_names() for t in get_family(name).vllm_config_types]
    assert len(claimed) == len(set(claimed))
