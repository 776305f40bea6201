"""Tokenizers of both backbones load without remote code; InternLM2's converted tokenizer gives the same ids as
sentencepiece itself (text split on special tokens, each piece encoded by SentencePieceProcessor, BOS first)."""

from __future__ import annotations

import random
import re

import pytest
import sentencepiece

from tests.families.internvl2_5.twins_cache import tiny_twin
from vlserve.families.internvl2_5.tokenizer import load_tokenizer, save_tokenizer

QWEN_SPECIALS = {
    "<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<img>": 151665, "</img>": 151666,
    "<IMG_CONTEXT>": 151667, "<quad>": 151668, "</quad>": 151669, "<ref>": 151670, "</ref>": 151671,
    "<box>": 151672, "</box>": 151673,
}  # fmt: skip
INTERNLM2_SPECIALS = {
    "<unk>": 0, "<s>": 1, "</s>": 2, "<|plugin|>": 92538, "<|interpreter|>": 92539, "<|action_end|>": 92540,
    "<|action_start|>": 92541, "<|im_end|>": 92542, "<|im_start|>": 92543, "<img>": 92544, "</img>": 92545,
    "<IMG_CONTEXT>": 92546, "<quad>": 92547, "</quad>": 92548, "<ref>": 92549, "</ref>": 92550, "<box>": 92551,
    "</box>": 92552,
}  # fmt: skip
MIXED = [
    "Hello, world! The quick brown fox jumps over the lazy dog.",
    "你好，世界。书生·万象是一个多模态大语言模型。",
    "English 和中文 mixed 在一起 123 and ４５６ ｆｕｌｌ width——……",
    "   leading spaces, trailing spaces   ",
    "tabs\t\tand\nnewlines\n\n\nand\r\nCRLF",
    "digits 0 1 12 123 1234 12345 3.14159 -42 1e-10",
    "code:\n    def f(x):\n        return x ** 2  # comment\n",
    "emoji 😀🎉 accents éèê ñ ü ß ﬁ and a NUL \x00 byte",
    "<|im_start|>system\n你是书生·万象<|im_end|>\n<|im_start|>user\n<img><IMG_CONTEXT><IMG_CONTEXT></img>\n"
    "描述这张图片<|im_end|>\n<|im_start|>assistant\n",
    "<ref>the cat</ref><box>[[10, 20, 300, 400]]</box> <quad> </quad> <s>x</s><unk>",
    "a" + " " * 33 + "b" + "\n" * 7 + "c",
    "",
]


@pytest.fixture(scope="module")
def internlm2(tmp_path_factory):
    folder = tiny_twin("InternVL2_5-8B", tmp_path_factory)
    return load_tokenizer(folder), sentencepiece.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    return load_tokenizer(tiny_twin("InternVL2_5-1B", tmp_path_factory))


def sentencepiece_ids(sp, text: str) -> list[int]:
    """What InternLM2Tokenizer does: BOS, then special tokens by id and everything between through sentencepiece."""
    pattern = "(" + "|".join(re.escape(t) for t in sorted(INTERNLM2_SPECIALS, key=len, reverse=True)) + ")"
    ids = [1]
    for chunk in re.split(pattern, text):
        ids += [INTERNLM2_SPECIALS[chunk]] if chunk in INTERNLM2_SPECIALS else sp.encode(chunk) if chunk else []
    return ids


@pytest.mark.parametrize("text", MIXED)
def test_internlm2_ids_equal_sentencepiece(internlm2, text):
    tokenizer, sp = internlm2
    assert tokenizer(text).input_ids == sentencepiece_ids(sp, text)
    assert tokenizer(text, add_special_tokens=False).input_ids == sentencepiece_ids(sp, text)[1:]


def test_internlm2_ids_equal_sentencepiece_on_random_text(internlm2):
    """Adversarial strings: concatenated vocabulary pieces (every merge path), odd whitespace, specials."""
    tokenizer, sp = internlm2
    rng = random.Random(1234)
    pieces = [sp.id_to_piece(i).replace("\u2581", " ") for i in range(3, sp.get_piece_size()) if not sp.is_byte(i)]
    pieces = [p for p in pieces if not re.fullmatch(r"\[UNUSED_TOKEN_14[1-6]\]", p)]  # see the test below
    alphabet = list(" \t\n\r\u3000\u00a0abcXYZ0123456789你好世界。，éü😀ﬁ<>|_-#`'\"()[]{}/\\")
    alphabet += list(INTERNLM2_SPECIALS)
    for _ in range(1500):
        parts = [rng.choice(pieces) if rng.random() < 0.6 else rng.choice(alphabet) * rng.randint(1, 3)]
        text = "".join(parts + [rng.choice(pieces) for _ in range(rng.randint(0, 8))])
        assert tokenizer(text).input_ids == sentencepiece_ids(sp, text), repr(text)


def test_special_tokens_are_single_ids(internlm2, qwen):
    for tokenizer, specials in ((internlm2[0], INTERNLM2_SPECIALS), (qwen, QWEN_SPECIALS)):
        for text, token_id in specials.items():
            assert tokenizer(text, add_special_tokens=False).input_ids == [token_id], text
            assert tokenizer.convert_ids_to_tokens(token_id) == text


def test_internlm2_bos_eos_pad(internlm2):
    tokenizer, _ = internlm2
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (1, 2, 2)
    assert tokenizer("hi").input_ids[0] == 1 and len(tokenizer) == 92553


def test_qwen_has_no_bos(qwen):
    assert qwen.bos_token is None and qwen.eos_token_id == 151645 and qwen.pad_token_id == 151643
    assert qwen("Hello").input_ids == qwen("Hello", add_special_tokens=False).input_ids and len(qwen) == 151674


@pytest.mark.parametrize("text", MIXED)
def test_decode_inverts_encode_exactly(internlm2, qwen, text):
    """Unlike InternLM2Tokenizer.decode (which puts a space before special tokens), decode is exact."""
    for tokenizer in (internlm2[0], qwen):
        assert tokenizer.decode(tokenizer(text, add_special_tokens=False).input_ids) == text


def test_internlm2_generated_ids_decode_like_sentencepiece(internlm2):
    tokenizer, sp = internlm2
    generated = sp.encode("The answer is 42.\n答案是四十二。") + [92542]
    assert tokenizer.decode(generated, skip_special_tokens=True) == sp.decode(generated[:-1])


def test_unused_token_text_is_not_a_special_token(internlm2):
    """Known, deliberate difference: in sentencepiece `[UNUSED_TOKEN_146]` is the piece at 92543, so the remote
    tokenizer turns that literal text into <|im_start|>. Here only the special text maps to the id."""
    tokenizer, sp = internlm2
    assert sp.encode("[UNUSED_TOKEN_146]") == [92543]
    assert 92543 not in tokenizer("[UNUSED_TOKEN_146]", add_special_tokens=False).input_ids


def test_saved_tokenizer_loads_natively(internlm2, tmp_path_factory):
    from transformers import AutoTokenizer

    folder = save_tokenizer(tiny_twin("InternVL2_5-26B", tmp_path_factory), tmp_path_factory.mktemp("tok"))
    assert "auto_map" not in (folder / "tokenizer_config.json").read_text()
    reloaded = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    for text in MIXED:
        assert reloaded(text).input_ids == internlm2[0](text).input_ids
