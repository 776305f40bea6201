"""Everything InternVL2.5-specific: reference configs, tokenizers, tiling, prompts, video frames, weight
conversion, AWQ packing and architecture twins. Modules are imported directly (no heavy imports here)."""
