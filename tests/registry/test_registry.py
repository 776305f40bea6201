"""The InternVL2.5 family as the seed page states it, resolution of launch parameters, and user registrations."""

from __future__ import annotations

import json

import pytest

from vlserve.errors import NotFound, RegistrationError, SpecNotFound
from vlserve.registry import Registry, parse_family, resolve

PAGE_SPECS = [  # (format, size, quantizations, model id), in the page's order
    ("pytorch", 1, ["4-bit", "8-bit", "none"], "OpenGVLab/InternVL2_5-1B"),
    ("pytorch", 2, ["4-bit", "8-bit", "none"], "OpenGVLab/InternVL2_5-2B"),
    ("pytorch", 4, ["4-bit", "8-bit", "none"], "OpenGVLab/InternVL2_5-4B"),
    ("awq", 4, ["Int4"], "OpenGVLab/InternVL2_5-4B-AWQ"),
    ("pytorch", 8, ["4-bit", "8-bit", "none"], "OpenGVLab/InternVL2_5-8B"),
    ("awq", 8, ["Int4"], "OpenGVLab/InternVL2_5-8B-AWQ"),
    ("pytorch", 26, ["4-bit", "8-bit", "none"], "OpenGVLab/InternVL2_5-26B"),
    ("awq", 26, ["Int4"], "OpenGVLab/InternVL2_5-26B-AWQ"),
    ("pytorch", 38, ["4-bit", "8-bit", "none"], "OpenGVLab/InternVL2_5-38B"),
    ("awq", 38, ["Int4"], "OpenGVLab/InternVL2_5-38B-AWQ"),
    ("pytorch", 78, ["4-bit", "8-bit", "none"], "OpenGVLab/InternVL2_5-78B"),
    ("awq", 78, ["Int4"], "OpenGVLab/InternVL2_5-78B-AWQ"),
]


@pytest.fixture()
def registry(tmp_path) -> Registry:
    return Registry(tmp_path / "registrations")


def test_family_matches_the_model_page(registry):
    family = registry.get("InternVL2.5")
    assert family.context_length == 16384
    assert family.model_lang == ["en", "zh"]
    assert family.model_ability == ["chat", "vision"]
    assert family.model_description.startswith("InternVL 2.5 is an open-source multimodal large language model")
    got = [(s.model_format, s.model_size_in_billions, s.quantizations, s.model_id) for s in family.model_specs]
    assert got == PAGE_SPECS
    for spec in family.model_specs:
        assert spec.model_hub_ids == {"huggingface": spec.model_id, "modelscope": spec.model_id}


def _launch_combinations():
    for fmt, size, quants, model_id in PAGE_SPECS:
        for quant in quants:
            engines = ["Transformers", "vLLM"] if (fmt == "awq" or quant == "none") else ["Transformers"]
            for engine in engines:
                yield engine, fmt, size, quant, model_id


@pytest.mark.parametrize(("engine", "fmt", "size", "quant", "model_id"), list(_launch_combinations()))
def test_every_page_combination_resolves(registry, engine, fmt, size, quant, model_id):
    resolved = resolve(
        registry, model_name="InternVL2.5", model_engine=engine, model_format=fmt,
        model_size_in_billions=size, quantization=quant,
    )
    assert (resolved.spec.model_id, resolved.engine, resolved.quantization) == (model_id, engine, quant)


@pytest.mark.parametrize("spelling", ["vllm", "VLLM", "vLLM", "transformers", "Transformers"])
def test_engine_names_are_case_insensitive(registry, spelling):
    resolved = resolve(registry, model_name="InternVL2.5", model_engine=spelling, model_format="pytorch",
                       model_size_in_billions=1, quantization="none")
    assert resolved.engine.lower() == spelling.lower()


def test_unspecified_fields_pick_the_first_spec_and_none(registry):
    resolved = resolve(registry, model_name="internvl2.5", model_engine="Transformers")
    assert (resolved.spec.model_id, resolved.quantization) == ("OpenGVLab/InternVL2_5-1B", "none")
    awq = resolve(registry, model_name="InternVL2.5", model_engine="vllm", model_size_in_billions=8, quantization="int4")
    assert (awq.spec.model_format, awq.quantization) == ("awq", "Int4")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(model_format="pytorch", model_size_in_billions=3), "InternVL2.5 pytorch sizes are 1, 2, 4, 8, 26, 38, 78"),
        (dict(model_format="awq", model_size_in_billions=1), "InternVL2.5 awq sizes are 4, 8, 26, 38, 78"),
        (dict(model_format="gguf"), "InternVL2.5 formats are pytorch, awq"),
        (dict(model_format="pytorch", model_size_in_billions=1, quantization="Int4"),
         "InternVL2.5 pytorch 1B quantizations are 4-bit, 8-bit, none"),
        (dict(model_format="awq", model_size_in_billions=8, quantization="none"),
         "InternVL2.5 awq 8B quantizations are Int4"),
    ],
)
def test_invalid_spec_errors_say_what_is_valid(registry, kwargs, message):
    with pytest.raises(SpecNotFound) as info:
        resolve(registry, model_name="InternVL2.5", model_engine="Transformers", **kwargs)
    assert message in info.value.message


@pytest.mark.parametrize("quant", ["8-bit", "4-bit"])
def test_vllm_with_bitsandbytes_quantization_suggests_transformers(registry, quant):
    with pytest.raises(SpecNotFound) as info:
        resolve(registry, model_name="InternVL2.5", model_engine="vllm", model_format="pytorch",
                model_size_in_billions=8, quantization=quant)
    message = info.value.message
    assert "vLLM serves InternVL2.5 pytorch 8B only with quantization none" in message
    assert "--model-engine Transformers" in message
    assert info.value.param == "quantization"


def test_unknown_name_lists_closest(registry):
    with pytest.raises(SpecNotFound) as info:
        resolve(registry, model_name="InternVL25", model_engine="vllm")
    assert "closest names: InternVL2.5" in info.value.message


def test_unknown_engine(registry):
    with pytest.raises(SpecNotFound) as info:
        resolve(registry, model_name="InternVL2.5", model_engine="llama.cpp")
    assert "Transformers, vLLM" in info.value.message


def _custom_family(name: str = "my-internvl") -> dict:
    return {
        "model_name": name,
        "model_family": "internvl2_5",
        "context_length": 8192,
        "model_lang": ["en"],
        "model_ability": ["chat", "vision"],
        "model_specs": [{
            "model_format": "pytorch", "model_size_in_billions": 1, "quantizations": ["none"],
            "model_id": "me/my-internvl", "model_hub_ids": {"huggingface": "me/my-internvl"},
            "engines": {"Transformers": ["none"]}, "architecture": "InternVL2_5-1B",
        }],
    }


def test_registration_round_trip(registry, tmp_path):
    registry.register(parse_family(json.dumps(_custom_family())))
    assert "my-internvl" in Registry(tmp_path / "registrations").families()  # persisted: a new instance sees it
    resolved = resolve(registry, model_name="my-internvl", model_engine="transformers")
    assert resolved.spec.model_id == "me/my-internvl"
    with pytest.raises(RegistrationError, match="already registered"):
        registry.register(parse_family(_custom_family()))
    registry.unregister("my-internvl")
    assert "my-internvl" not in registry.families()
    with pytest.raises(NotFound):
        registry.unregister("my-internvl")


def test_builtins_cannot_be_overwritten_or_removed(registry):
    with pytest.raises(RegistrationError, match="built-in"):
        registry.register(parse_family(_custom_family("InternVL2.5")))
    with pytest.raises(RegistrationError, match="built-in"):
        registry.unregister("InternVL2.5")


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda f: f.update(surprise=1), "surprise"),
        (lambda f: f.update(model_family="llava"), "not implemented"),
        (lambda f: f["model_specs"][0].update(engines={"llama.cpp": ["none"]}), "unknown engine"),
        (lambda f: f["model_specs"][0].update(engines={"Transformers": ["8-bit"]}), "does not offer"),
        (lambda f: f["model_specs"][0].update(model_hub_ids={"modelscope": "x/y"}), "huggingface"),
        (lambda f: f.update(context_length=0), "context_length"),
        (lambda f: f.update(model_name="../escape"), "model_name"),
    ],
)
def test_invalid_family_files_are_rejected(mutate, fragment):
    family = _custom_family()
    mutate(family)
    with pytest.raises(RegistrationError, match="family file is invalid") as info:
        parse_family(json.dumps(family))
    assert fragment in info.value.message


def test_non_json_is_rejected():
    with pytest.raises(RegistrationError, match="not valid JSON"):
        parse_family("{nope")
