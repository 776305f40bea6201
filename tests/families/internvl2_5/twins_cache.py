"""One tiny twin per architecture per test session, shared by the twin, tokenizer and AWQ tests."""

from __future__ import annotations

from pathlib import Path

from vlserve.families.internvl2_5.twin import write_twin

_TWINS: dict[str, Path] = {}


def tiny_twin(architecture: str, tmp_path_factory) -> Path:
    if architecture not in _TWINS:
        _TWINS[architecture] = write_twin(architecture, tmp_path_factory.mktemp(architecture))
    return _TWINS[architecture]
