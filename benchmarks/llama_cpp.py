"""llama.cpp, the CPU peer of B5: the full-size twin's language model converted with llama.cpp's own converter
(`convert_hf_to_gguf.py`, bf16), quantized with `llama-quantize` (q8_0, q4_0), decode measured with `llama-bench`
(batch 1, `-p 0 -n N`, 2 threads). Built by `benchmarks/build_llama_cpp.sh` into benchmarks/.work/llama.cpp;
`available()` says why not where it was not built.

The converter reads a Hugging Face Qwen2 folder: the twin's `language_model.*` tensors under their Qwen2 names, the
twin's `llm_config` as config.json, and its tokenizer files. Only the language model: B5 compares decode, which
never touches the vision tower.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks.config import BENCH_DIR

LLAMA_DIR = BENCH_DIR / ".work" / "llama.cpp"
BIN = LLAMA_DIR / "build" / "bin"
TYPES = {"bf16": None, "q8_0": "Q8_0", "q4_0": "Q4_0"}  # GGUF name -> llama-quantize type (bf16: as converted)
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")


def available() -> str | None:
    """None when llama.cpp is built here, else why not (and how to build it)."""
    missing = [p for p in (BIN / "llama-bench", BIN / "llama-quantize", LLAMA_DIR / "src" / "convert_hf_to_gguf.py")
               if not p.exists()]  # fmt: skip
    if missing:
        return f"llama.cpp is not built ({missing[0]} missing); run benchmarks/build_llama_cpp.sh (~10 min)"
    return None


def ggufs(model_dir: Path, work_dir: Path) -> dict[str, Path]:
    """bf16 / q8_0 / q4_0 GGUF files of `model_dir`'s language model, written once under `work_dir`."""
    out = work_dir / "gguf"
    out.mkdir(parents=True, exist_ok=True)
    files = {name: out / f"llm-{name}.gguf" for name in TYPES}
    if not files["bf16"].exists():
        hf = _qwen2_folder(model_dir, out / "hf")
        subprocess.run([sys.executable, str(LLAMA_DIR / "src" / "convert_hf_to_gguf.py"), str(hf), "--outtype",
                        "bf16", "--outfile", str(files["bf16"])], check=True, capture_output=True,
                       env={**os.environ, "PYTHONPATH": str(LLAMA_DIR / "src" / "gguf-py")})  # fmt: skip
        shutil.rmtree(hf)
    for name, kind in TYPES.items():
        if kind and not files[name].exists():
            subprocess.run([str(BIN / "llama-quantize"), str(files["bf16"]), str(files[name]), kind], check=True,
                           capture_output=True)  # fmt: skip
    return files


def decode_tok_s(gguf: Path, tokens: int, threads: int = 2, repetitions: int = 3) -> list[float]:
    """llama-bench's batch-1 generation speed (tg`tokens`), one sample per repetition."""
    done = subprocess.run([str(BIN / "llama-bench"), "-m", str(gguf), "-p", "0", "-n", str(tokens), "-t",
                           str(threads), "-r", str(repetitions), "-o", "json"], check=True, capture_output=True,
                          text=True)  # fmt: skip
    rows = json.loads(done.stdout)
    return [float(s) for row in rows for s in row.get("samples_ts", [row["avg_ts"]])]


def _qwen2_folder(model_dir: Path, out: Path) -> Path:
    from safetensors import safe_open
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    config = json.loads((model_dir / "config.json").read_text())["llm_config"]
    (out / "config.json").write_text(json.dumps(config))
    for name in TOKENIZER_FILES:
        if (model_dir / name).exists():
            shutil.copy(model_dir / name, out / name)
    tensors = {}
    for shard in sorted(model_dir.glob("*.safetensors")):
        with safe_open(shard, framework="pt") as f:
            for key in f.keys():
                if key.startswith("language_model."):
                    tensors[key.removeprefix("language_model.")] = f.get_tensor(key)
    save_file(tensors, out / "model.safetensors")
    return out
