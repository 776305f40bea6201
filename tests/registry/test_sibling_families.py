"""The sibling families as the registry offers them: what is valid is listed (GET /v1/engines/{name}, the web UI's
launch form and `vlserve registrations` read the same data), and an invalid combination says what is valid."""

from __future__ import annotations

import pytest

from vlserve.errors import SpecNotFound
from vlserve.registry import Registry, resolve
from vlserve.serving.catalog import CatalogService


def sizes(name: str, model_format: str) -> list:
    specs = Registry.default().get(name).model_specs
    return [s.model_size_in_billions for s in specs if s.model_format == model_format]


def test_the_siblings_are_registered_with_their_sizes():
    assert sizes("InternVL2.5-MPO", "pytorch") == [1, 2, 4, 8, 26, 38, 78]
    assert sizes("InternVL2.5-MPO", "awq") == [4, 8, 26, 38, 78]
    assert sizes("InternVL3", "pytorch") == sizes("InternVL3", "awq") == [1, 2, 8, 14, 38, 78]
    spec = resolve(Registry.default(), model_name="internvl3", model_engine="vllm", model_format="AWQ",
                   model_size_in_billions=38, quantization="int4")  # fmt: skip
    assert (spec.spec.model_id, spec.quantization, spec.spec.architecture) == ("OpenGVLab/InternVL3-38B-AWQ", "Int4",
                                                                                "InternVL3-38B-AWQ")  # fmt: skip


@pytest.mark.parametrize(("name", "fmt", "size", "valid"), [
    ("InternVL3", "pytorch", 9, "InternVL3 pytorch sizes are 1, 2, 8, 14, 38, 78"),
    ("InternVL2.5-MPO", "awq", 1, "InternVL2.5-MPO awq sizes are 4, 8, 26, 38, 78"),
])  # fmt: skip
def test_an_invalid_sibling_combination_says_what_is_valid(name, fmt, size, valid):
    with pytest.raises(SpecNotFound, match=valid):
        resolve(Registry.default(), model_name=name, model_engine="Transformers", model_format=fmt,
                model_size_in_billions=size)  # fmt: skip


def test_the_engines_listing_shows_each_sibling():
    catalog = CatalogService(Registry.default())
    for name in ("InternVL2.5-MPO", "InternVL3"):
        listing = catalog.engines_for(name)  # vLLM is listed where it is installed
        every = {(s.model_format, s.model_size_in_billions) for s in Registry.default().get(name).model_specs}
        assert "Transformers" in listing and set(listing) <= {"Transformers", "vLLM"}
        for entries in listing.values():
            assert {(e["model_format"], e["model_size_in_billions"]) for e in entries} == every
