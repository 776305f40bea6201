"""Load an InternVL2.5 checkpoint's tokenizer without remote code, for both LLM backbones.

* Qwen2.5 backbones (1B/4B/38B/78B): the checkpoint ships `vocab.json` + `merges.txt` with
  `tokenizer_class: Qwen2Tokenizer`; transformers builds it natively.
* InternLM2 backbones (2B/8B/26B): the checkpoint ships only a sentencepiece `tokenizer.model` and names
  `InternLM2Tokenizer` (remote code). We convert the sentencepiece model in-process into a `tokenizers` BPE
  tokenizer that gives the same ids as the remote class:

  - text is split on the special tokens first (the `added_tokens_decoder` of `tokenizer_config.json`, e.g.
    `<|im_start|>` 92543, `<IMG_CONTEXT>` 92546), and every piece in between is encoded exactly as
    `SentencePieceProcessor.encode(piece)` would (BPE by piece score, byte fallback, identity normalisation,
    no dummy prefix: this model has `add_dummy_prefix: false`);
  - sentencepiece's user-defined symbols (full-width letters, `——`, `[UNUSED_TOKEN_n]`) stay atomic;
  - like `InternLM2Tokenizer` (add_bos_token=True) a BOS `<s>` (id 1) is prepended when
    `add_special_tokens=True` (the default); pass `add_special_tokens=False` to get the bare ids.

  Decoding keeps special tokens verbatim and inserts nothing around them (the remote class's `decode` puts a
  space before each special token), so `decode(encode(x, add_special_tokens=False)) == x` for every string
  without a literal U+2581 "▁" (sentencepiece itself reads that as a space). That matters to vLLM, which
  decodes prompt ids and re-encodes them when it inserts image tokens.

  One deliberate difference: sentencepiece's user-defined pieces `[UNUSED_TOKEN_141]`…`[UNUSED_TOKEN_146]` are
  the ids the special tokens `<|plugin|>`…`<|im_start|>` took over; the remote tokenizer turns that literal
  text into the special id, this one encodes it as ordinary text. See `save_tokenizer` for handing it to vLLM.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from vlserve.errors import InvalidRequest

QWEN_CLASSES = ("Qwen2Tokenizer", "Qwen2TokenizerFast")
INTERNLM2_CLASSES = ("InternLM2Tokenizer", "InternLM2TokenizerFast")


def load_tokenizer(model_dir: Path):
    """The checkpoint's tokenizer as a transformers fast tokenizer (no remote code, no network)."""
    model_dir = Path(model_dir)
    config = _tokenizer_config(model_dir)
    kind = config.get("tokenizer_class")
    if (model_dir / "tokenizer.json").is_file() and kind not in INTERNLM2_CLASSES:
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast.from_pretrained(model_dir, fix_mistral_regex=False)
    if kind in QWEN_CLASSES:
        from transformers import Qwen2Tokenizer

        # fix_mistral_regex=False: InternVL's config.json has no transformers_version, which makes
        # transformers suspect a Mistral tokenizer; the Qwen2 regex is correct as it is.
        return Qwen2Tokenizer.from_pretrained(model_dir, fix_mistral_regex=False)
    if kind in INTERNLM2_CLASSES or (model_dir / "tokenizer.model").is_file():
        return build_internlm2_tokenizer(model_dir)
    raise InvalidRequest(
        f"{model_dir} has no tokenizer this project can load without remote code "
        f"(tokenizer_class {kind!r}; expected one of {', '.join(QWEN_CLASSES + INTERNLM2_CLASSES)})"
    )


def build_internlm2_tokenizer(model_dir: Path):
    """A fast tokenizer equivalent to InternLM2Tokenizer, from `tokenizer.model` + `tokenizer_config.json`."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    model_dir = Path(model_dir)
    config = _tokenizer_config(model_dir)
    specials = _special_tokens(config)
    spm_bytes = (model_dir / "tokenizer.model").read_bytes()
    backend = Tokenizer.from_str(_internlm2_tokenizer_json(spm_bytes, json.dumps(specials, sort_keys=True)))
    named = {k: _content(config[k]) for k in ("bos_token", "eos_token", "unk_token", "pad_token") if config.get(k)}
    extra = [t for t in config.get("additional_special_tokens", []) if isinstance(t, str)]
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        model_max_length=config.get("model_max_length", 8192),
        clean_up_tokenization_spaces=False,
        chat_template=config.get("chat_template"),
        additional_special_tokens=extra,
        **named,
    )


def save_tokenizer(model_dir: Path, outdir: Path) -> Path:
    """Write the checkpoint's tokenizer to `outdir` in a form any transformers/vLLM loads natively.

    For InternLM2 checkpoints this is the converted `tokenizer.json` + a `tokenizer_config.json` without
    `auto_map`; pass `outdir` as vLLM's `tokenizer=` so it never needs trust_remote_code. Qwen checkpoints
    are written out the same way (their ids are unchanged).
    """
    outdir = Path(outdir)
    tokenizer = load_tokenizer(model_dir)
    tokenizer.save_pretrained(outdir)
    return outdir


def _tokenizer_config(model_dir: Path) -> dict:
    path = model_dir / "tokenizer_config.json"
    if not path.is_file():
        raise InvalidRequest(f"{model_dir} has no tokenizer_config.json; is it a model directory?")
    return json.loads(path.read_text(encoding="utf-8"))


def _content(token) -> str:
    return token["content"] if isinstance(token, dict) else token


def _special_tokens(config: dict) -> dict[str, int]:
    """Special-token text -> id from `added_tokens_decoder` (the ids the remote tokenizer uses)."""
    decoder = config.get("added_tokens_decoder", {})
    return {entry["content"]: int(i) for i, entry in decoder.items() if entry.get("special", True)}


@functools.lru_cache(maxsize=4)
def _internlm2_tokenizer_json(spm_bytes: bytes, specials_json: str) -> str:
    """Convert once per (model, special tokens); conversion takes ~2 s, loading the JSON ~0.3 s."""
    from vlserve.families.internvl2_5.spm_convert import convert_spm_bpe

    return convert_spm_bpe(spm_bytes, json.loads(specials_json)).to_str()
