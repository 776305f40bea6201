"""Stored user registrations across versions: quantization labels in any letter case are read as the model page
spells them, and one file this version cannot read is left out (logged) instead of hiding every family."""

from __future__ import annotations

import json

from vlserve.registry import Registry
from vlserve.registry.store import builtin_families


def test_a_bad_stored_file_is_skipped_and_case_is_forgiven(tmp_path, caplog):
    registry = Registry(tmp_path)
    tmp_path.mkdir(exist_ok=True)
    family = builtin_families()["InternVL2.5"].model_dump()
    family["model_name"] = "mine"
    family["model_specs"][0]["quantizations"] = ["NONE", "8-bit", "4-Bit"]
    family["model_specs"][0]["engines"] = {"Transformers": ["none", "8-BIT"]}
    (tmp_path / "mine.json").write_text(json.dumps(family))
    (tmp_path / "broken.json").write_text(json.dumps({**family, "model_name": "broken", "surprise": 1}))
    families = registry.families()
    assert "mine" in families and "broken" not in families and "InternVL2.5" in families
    assert families["mine"].model_specs[0].quantizations == ["none", "8-bit", "4-bit"]
    assert families["mine"].model_specs[0].engines["Transformers"] == ["none", "8-bit"]
    assert "broken.json" in caplog.text
