"""Convert a sentencepiece BPE model into an equivalent `tokenizers.Tokenizer` (same ids, same decode).

Equivalence rests on how sentencepiece's BPE encoder works (bpe_model.cc): it starts from single characters,
keeps user-defined symbols atomic, repeatedly merges the adjacent pair whose concatenation is a vocabulary
piece with the highest score, and falls back to `<0xXX>` byte pieces for characters outside the vocabulary.
A `tokenizers` BPE reproduces that when its merge list is every (left, right) split of every mergeable
piece, ranked by the merged piece's score; user-defined symbols become added tokens. Only the model flavour
InternLM2 uses is supported (identity normalisation, no dummy prefix, no whitespace collapsing); anything
else is refused rather than converted approximately. tests/families/internvl2_5/test_tokenizer.py checks the
result against sentencepiece itself.
"""

from __future__ import annotations

from vlserve.families.internvl2_5.spm_model import PieceType, SpmModel, read_spm_model

SPACE = "\u2581"  # sentencepiece's visible space "▁"
_NOT_MERGEABLE = {PieceType.CONTROL, PieceType.UNKNOWN, PieceType.BYTE, PieceType.UNUSED, PieceType.USER_DEFINED}


def convert_spm_bpe(spm_bytes: bytes, specials: dict[str, int], bos_token: str | None = "<s>"):
    """A Tokenizer for `spm_bytes` whose special tokens `specials` (text -> id) are split off first."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors

    spm = read_spm_model(spm_bytes)
    _check_supported(spm)
    types = _effective_types(spm)
    by_id = {token_id: text for text, token_id in specials.items()}
    keys = [by_id.get(i) or _vocab_key(i, p.piece, types[i]) for i, p in enumerate(spm.pieces)]
    vocab = {key: i for i, key in enumerate(keys)}
    merges = _merges(spm, types, vocab)
    vocab.update({text: token_id for token_id, text in by_id.items() if token_id >= len(keys)})
    unk = next(p.piece for p in spm.pieces if p.type == PieceType.UNKNOWN)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=unk, fuse_unk=True, byte_fallback=True))
    tokenizer.normalizer = normalizers.Replace(" ", SPACE)
    tokenizer.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()])
    # A special token takes over its id's piece: InternLM2's `<|im_start|>` is the user-defined piece
    # `[UNUSED_TOKEN_146]` (92543) in sentencepiece. Only the special text maps to the id here; the literal
    # text "[UNUSED_TOKEN_146]" is encoded as ordinary pieces (the remote tokenizer would give 92543).
    user_defined = [k for i, k in enumerate(keys) if types[i] == PieceType.USER_DEFINED and i not in by_id]
    tokenizer.add_tokens([AddedToken(t, normalized=SPACE in t, special=False) for t in user_defined])
    ordered = sorted(specials.items(), key=lambda item: item[1])
    tokenizer.add_special_tokens([AddedToken(t, normalized=False, special=True) for t, _ in ordered])
    if bos_token is not None and bos_token in specials:
        bos = (bos_token, specials[bos_token])
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos_token}:0 $A:0", pair=f"{bos_token}:0 $A:0 $B:1", special_tokens=[bos]
        )
    return tokenizer


def _check_supported(spm: SpmModel) -> None:
    problems = []
    if spm.model_type != 2:
        problems.append("not a BPE model")
    if spm.normalizer_name not in ("identity", ""):
        problems.append(f"normalizer {spm.normalizer_name!r}")
    if spm.add_dummy_prefix:
        problems.append("add_dummy_prefix")
    if spm.remove_extra_whitespaces:
        problems.append("remove_extra_whitespaces")
    if not spm.byte_fallback:
        problems.append("no byte_fallback")
    if problems:
        raise ValueError(f"sentencepiece model not supported by this converter: {', '.join(problems)}")


def _effective_types(spm: SpmModel) -> list[PieceType]:
    """Piece types as the encoder sees them: with byte fallback, a literal NUL piece is treated as unused."""
    return [
        PieceType.UNUSED if (p.piece == "\x00" and spm.byte_fallback) else p.type for p in spm.pieces
    ]


def _vocab_key(index: int, piece: str, kind: PieceType) -> str:
    return f"<vlserve_unused_{index}>" if kind == PieceType.UNUSED else piece


def _merges(spm: SpmModel, types: list[PieceType], vocab: dict[str, int]) -> list[tuple[str, str]]:
    """Every split of every mergeable piece into two mergeable pieces, best score first."""
    mergeable = {p.piece for i, p in enumerate(spm.pieces) if types[i] not in _NOT_MERGEABLE}
    ranked = []
    for i, p in enumerate(spm.pieces):
        if p.piece not in mergeable or len(p.piece) < 2:
            continue
        for cut in range(1, len(p.piece)):
            left, right = p.piece[:cut], p.piece[cut:]
            if left in mergeable and right in mergeable:
                ranked.append((-p.score, i, vocab[left], left, right))
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]
